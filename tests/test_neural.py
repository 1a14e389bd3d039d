"""Word-level torch coders: ensembles, single-label output, transfer policies, explanations, output priors.

What every registered model must do (build, learn the trigger pattern, save and reload to identical
scores, explain or refuse) is checked for all of them by ``test_conformance.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trigger_corpus import TRIGGERS, corpus

from medcoder.config import RunConfig, validate
from medcoder.evaluation.metrics import mean_average_precision
from medcoder.models import build_model, load_model
from medcoder.models.base import DevSet

SMALL = {
    "encoding": {"max_tokens": 60, "min_count": 1},
    "embedding": {"dim": 16},
    "train": {"epochs": 12, "batch_size": 16, "lr": 0.01, "early_stopping_patience": 12, "num_threads": 1},
}
ARCHITECTURES = {
    "textcnn.v1": {"filter_sizes": [2, 3], "num_filters": 16, "dropout": 0.1},
    "caml.v1": {"kernel_size": 3, "num_filters": 16, "dropout": 0.1},
    "drcaml.v1": {"kernel_size": 3, "num_filters": 16, "dropout": 0.1},
    # residual blocks with batch norm need more steps on 160 notes
    "multirescnn.v1": {
        "filter_sizes": [3, 5],
        "num_filters": 8,
        "dropout": 0.1,
        "train": {**SMALL["train"], "epochs": 30},
    },
    "bigru.v1": {"hidden": 16, "dropout": 0.1},
}


def model_config(model_type: str, **extra):
    raw = {"model": {"type": model_type, **SMALL, **ARCHITECTURES[model_type], **extra}}
    return validate(RunConfig, raw, source="test").model


@pytest.fixture(scope="module")
def data():
    return corpus(160, seed=0), corpus(40, seed=1), corpus(40, seed=2)


DESCRIPTIONS = [f"{word} finding" for word in TRIGGERS]


def test_ensemble_is_the_mean_of_its_members(data) -> None:
    (texts, y), _, (test_texts, _) = data
    config = model_config("textcnn.v1", ensemble=2, train={**SMALL["train"], "epochs": 3})
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=5).fit(texts, y)
    assert [m["seed"] for m in model.training_report()["members"]] == [5, 6]
    members = [model._scores([member], model.encode(test_texts)) for member in model.members_]
    np.testing.assert_allclose(model.predict_scores(test_texts), (members[0] + members[1]) / 2, atol=1e-6)
    assert not np.allclose(members[0], members[1])  # different seeds, different members


def test_multiclass_uses_softmax(data) -> None:
    (texts, y), _, (test_texts, test_y) = data
    first = y.argmax(axis=1)
    one_hot = np.eye(len(TRIGGERS), dtype=bool)[first]
    model = build_model(model_config("textcnn.v1"), n_labels=len(TRIGGERS), task="multiclass").fit(texts, one_hot)
    probs = model.predict_scores(test_texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_explanations_point_at_the_trigger_word(data) -> None:
    (texts, y), (dev_texts, dev_y), _ = data
    config = model_config("caml.v1", train={**SMALL["train"], "epochs": 20})
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel").fit(texts, y, dev=DevSet(dev_texts, dev_y))
    note = "patient seen today with new rash on both arms plan follow up"
    label = TRIGGERS.index("rash")
    spans = model.explain([note], [[label]], window=1, top=1)[0][label]
    start, end, weight = spans[0]
    assert note[start:end] == "rash" and weight > 0.3


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory):
    """A TextCNN trained on a 'source task' (which trigger comes first) and saved as a bundle."""
    from medcoder.config import DataConfig
    from medcoder.data.sources.jsonl import JsonlSource
    from medcoder.training.run import train_run

    folder = tmp_path_factory.mktemp("source")
    import json

    rows = []
    for split, seed, n in (("train", 10, 160), ("dev", 11, 40), ("test", 12, 40)):
        texts, y = corpus(n, seed)
        for i, (text, row) in enumerate(zip(texts, y, strict=True)):
            rows.append({"id": f"{split}{i}", "text": text, "labels": [TRIGGERS[int(np.argmax(row))]], "split": split})
    path = folder / "source.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig(
        task={"type": "multiclass"},
        data=DataConfig(source=JsonlSource(path=str(path))),
        model=model_config("textcnn.v1"),
    )
    return train_run(config, folder / "model").bundle_dir


@pytest.mark.parametrize(
    ("embeddings", "convolutions", "adaptation"),
    [
        ("frozen", "frozen", 32),
        ("frozen", "tuned", 32),
        ("tuned", "tuned", 32),
        ("frozen", "dual", 32),
        ("tuned", "tuned", None),
    ],
)
def test_transfer_policies(source_bundle, data, embeddings, convolutions, adaptation, tmp_path) -> None:
    from medcoder.models.textcnn import load_source_textcnn

    (texts, y), (dev_texts, dev_y), (test_texts, test_y) = data
    transfer = {
        "source": str(source_bundle),
        "embeddings": embeddings,
        "convolutions": convolutions,
        "adaptation_dim": adaptation,
    }
    model = build_model(model_config("textcnn.v1", transfer=transfer), n_labels=len(TRIGGERS), task="multilabel")
    model.fit(texts, y, dev=DevSet(dev_texts, dev_y))
    source, _, _ = load_source_textcnn(source_bundle)
    network = model.members_[0]
    # without an adaptation layer the new output reads the source features directly
    assert network.output.linear.in_features == (32 if adaptation else sum(c.out_channels for c in source.convs))
    same_embedding = torch.equal(_source_rows(network.embedding), source.embedding.embedding.weight)
    same_convs = all(torch.equal(a.weight, b.weight) for a, b in zip(network.convs, source.convs, strict=True))
    assert same_embedding == (embeddings == "frozen")
    assert same_convs == (convolutions == "frozen")
    if convolutions == "dual":
        frozen = network.frozen_convs
        assert all(torch.equal(a.weight, b.weight) for a, b in zip(frozen, source.convs, strict=True))
    assert mean_average_precision(test_y, model.predict_scores(test_texts)) > 0.8
    model.save(tmp_path)
    again = load_model(tmp_path, model.config, n_labels=len(TRIGGERS), task="multilabel")
    np.testing.assert_array_equal(again.predict_scores(test_texts), model.predict_scores(test_texts))


def _source_rows(embedding: torch.nn.Module) -> torch.Tensor:
    """The source-vocabulary rows of a transfer model's embedding (merged or source vocabulary)."""
    inner = embedding.source if hasattr(embedding, "source") else embedding
    return inner.embedding.weight


RENAMED = {"rash": "exanthem", "edema": "oedema"}  # the target task's words for two triggers: unseen by the source


def _renamed(texts: list[str]) -> list[str]:
    return [" ".join(RENAMED.get(word, word) for word in text.split()) for text in texts]


@pytest.mark.parametrize("vocabulary", ["source", "merged"])
def test_merged_vocabulary_learns_target_only_words(source_bundle, data, vocabulary, tmp_path) -> None:
    from medcoder.data.encoding import UNK_ID
    from medcoder.models.networks.transfer import MergedEmbedding
    from medcoder.models.textcnn import load_source_textcnn

    (texts, y), (dev_texts, dev_y), (test_texts, test_y) = data
    texts, dev_texts, test_texts = _renamed(texts), _renamed(dev_texts), _renamed(test_texts)
    transfer = {
        "source": str(source_bundle),
        "embeddings": "frozen",
        "convolutions": "frozen",
        "adaptation_dim": 32,
        "vocabulary": vocabulary,
    }
    config = model_config("textcnn.v1", transfer=transfer, embedding={"dim": 16, "init": "word2vec"})
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel")
    model.fit(texts, y, dev=DevSet(dev_texts, dev_y))
    source, source_vocab, _ = load_source_textcnn(source_bundle)
    network = model.members_[0]
    new_ids = model.vocab_.encode(list(RENAMED.values()))
    history = model.training_report()["members"][0]["history"]
    losses = [entry["train_loss"] for entry in history if entry["epoch"] > 0]
    assert losses[-1] < losses[0]  # training lowers the loss
    if vocabulary == "source":
        assert new_ids == [UNK_ID, UNK_ID] and model.vocab_.tokens == source_vocab.tokens
        return
    # merged: the source's ids unchanged, the target-only words after them, no longer <unk>
    assert model.vocab_.tokens[: len(source_vocab)] == source_vocab.tokens
    assert all(i >= len(source_vocab) for i in new_ids)
    assert isinstance(network.embedding, MergedEmbedding)
    # frozen embeddings: the source rows stay the source's, the new rows (word2vec start) learn
    assert torch.equal(network.embedding.source.embedding.weight, source.embedding.embedding.weight)
    assert network.embedding.new.weight.requires_grad
    assert not np.allclose(network.embedding.new.weight.detach().numpy(), model._pretrained)
    model.save(tmp_path)
    again = load_model(tmp_path, model.config, n_labels=len(TRIGGERS), task="multilabel")
    assert again.vocab_.tokens == model.vocab_.tokens
    np.testing.assert_array_equal(again.predict_scores(test_texts), model.predict_scores(test_texts))
    # a bundle's vocabulary and its config must agree
    from medcoder.errors import BundleError

    source_config = config.model_copy(update={"transfer": config.transfer.model_copy(update={"vocabulary": "source"})})
    with pytest.raises(BundleError, match="merged vocabulary"):
        load_model(tmp_path, source_config, n_labels=len(TRIGGERS), task="multilabel")


def test_transfer_bundle_from_before_vocabularies_loads_as_source_vocabulary(source_bundle, tmp_path) -> None:
    import json

    from medcoder.config import DataConfig
    from medcoder.data.sources.jsonl import JsonlSource
    from medcoder.inference.model import ModelCoder
    from medcoder.models.bundle import saved_run_config
    from medcoder.training.run import train_run

    rows = []
    for split, seed, n in (("train", 20, 80), ("dev", 21, 30), ("test", 22, 30)):
        texts, y = corpus(n, seed)
        for i, (text, row) in enumerate(zip(texts, y, strict=True)):
            labels = [TRIGGERS[j] for j in np.flatnonzero(row)]
            rows.append({"id": f"{split}{i}", "text": _renamed([text])[0], "labels": labels, "split": split})
    path = tmp_path / "target.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    transfer = {"source": str(source_bundle), "vocabulary": "source", "adaptation_dim": 16}
    small = {**SMALL["train"], "epochs": 2}
    config = RunConfig(
        data=DataConfig(source=JsonlSource(path=str(path))),
        model=model_config("textcnn.v1", transfer=transfer, train=small),
    )
    bundle = train_run(config, tmp_path / "model").bundle_dir
    notes = ["patient seen exanthem today", "fever and oedema"]
    expected = ModelCoder.open(bundle).bundle.model.predict_scores(notes)
    # what an older medcoder wrote: no transfer.vocabulary in the config, nor in words.json
    header = json.loads((bundle / "config.json").read_text())
    del header["run"]["model"]["transfer"]["vocabulary"]
    (bundle / "config.json").write_text(json.dumps(header))
    words = json.loads((bundle / "words.json").read_text())
    del words["source"]["vocabulary"], words["source"]["source_words"]
    (bundle / "words.json").write_text(json.dumps(words))
    assert saved_run_config(bundle)[0].model.transfer.vocabulary == "source"
    np.testing.assert_array_equal(ModelCoder.open(bundle).bundle.model.predict_scores(notes), expected)


def test_new_word_rows_are_aligned_to_the_source_space() -> None:
    from medcoder.models.textcnn import new_word_rows
    from medcoder.models.word_vectors import WordVectors

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    source_table = np.vstack([np.zeros((2, 8)), rng.normal(0, 0.5, (30, 8))]).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    truth = np.vstack([source_table[2:], rng.normal(0, 0.5, (10, 8))])  # the "true" vectors of all 40 words
    vectors = WordVectors(words, (truth @ rotation.T) * 3.0)  # the target's space: rotated and scaled
    tokens = ["<pad>", "<unk>", *words[:30], *words[30:], "w-without-vector"]
    rows, facts = new_word_rows(tokens, 32, source_table, vectors, seed=0)
    assert rows.shape == (11, 8) and facts["with_vector"] == 10 and facts["aligned_on"] == 30
    np.testing.assert_allclose(rows[:10], truth[30:], atol=1e-4)  # mapped back into the source space
    unaligned, _ = new_word_rows(tokens, 32, source_table, vectors, seed=0, align=False)
    np.testing.assert_allclose(unaligned[:10], vectors.vectors[30:], atol=1e-6)
    random_rows, facts = new_word_rows(tokens, 32, source_table, None, seed=0)
    assert facts["with_vector"] == 0 and abs(random_rows.std() - source_table[2:].std()) < 0.25


def test_early_stopping_metric_must_exist(data) -> None:
    (texts, y), _, _ = data
    config = model_config("textcnn.v1", train={**SMALL["train"], "early_stopping_metric": "accuracy"})
    from medcoder.errors import ConfigError

    with pytest.raises(ConfigError, match="early_stopping_metric 'accuracy' does not apply to a multilabel task"):
        build_model(config, n_labels=len(TRIGGERS), task="multilabel").fit(texts, y)


@pytest.mark.parametrize("model_type", ["textcnn.v1", "caml.v1", "bigru.v1"])
def test_output_bias_starts_at_label_priors(model_type, data) -> None:
    (texts, y), _, _ = data
    frozen_lr = {**SMALL["train"], "epochs": 1, "lr": 1e-12}  # one epoch that moves nothing measurable
    model = build_model(model_config(model_type, train=frozen_lr), n_labels=len(TRIGGERS), task="multilabel")
    model.fit(texts, y)
    prior = (y.sum(axis=0) + 0.5) / (len(y) + 1.0)
    module = model.members_[0]
    head = getattr(module, "head", None) or module.output
    bias = head.output_bias if hasattr(head, "output_bias") else head.linear.bias
    np.testing.assert_allclose(torch.sigmoid(bias.detach()).numpy(), prior, rtol=1e-4)


def test_predictor_explains_codes_of_an_attention_bundle(tmp_path) -> None:
    import medcoder
    from medcoder.training.run import train_run

    raw = {
        "data": {"source": {"kind": "synthetic", "n_notes": 150, "n_codes": 8, "seed": 2}},
        "labels": {"system": "icd10cm"},
        "model": {"type": "caml.v1", **SMALL, "kernel_size": 3, "num_filters": 16, "encoding": {"max_tokens": 400}},
    }
    bundle = train_run(validate(RunConfig, raw, source="test"), tmp_path / "caml").bundle_dir
    note = "ASSESSMENT AND PLAN: essential hypertension, continue lisinopril."
    prediction = medcoder.load(bundle).predict([note], top_k=2, explain=True)[0]

    # the same model as medcoder 0.1 wrote it (format v1, no kinds, "transfer": null on every word model) loads
    import json
    import shutil

    old = tmp_path / "caml-v1"
    shutil.copytree(bundle, old)
    header = json.loads((old / "config.json").read_text())
    del header["kind"], header["run"]["kind"]
    header["run"]["model"]["transfer"] = None
    (old / "config.json").write_text(json.dumps({**header, "format": "medcoder.bundle.v1"}))
    assert medcoder.load(old).predict([note], top_k=2, explain=True)[0] == prediction
    assert len(prediction.codes) >= 2
    for code in prediction.codes:
        assert code.evidence, code
        for span in code.evidence:
            assert note[span.start : span.end] == span.text and 0 < span.weight <= 1
    assert "evidence" in prediction.to_dict()["codes"][0]

    # TF-IDF explains itself too: the n-grams that raised the code's score most
    linear = medcoder.load(
        train_run(
            validate(RunConfig, {**raw, "model": {"type": "tfidf_lr.v1"}}, source="t"), tmp_path / "lr"
        ).bundle_dir
    )
    (explained,) = linear.predict([note], top_k=1, explain=True)
    top = explained.codes[0]
    assert top.code == "I10" and any("hypertension" in e.text.lower() for e in top.evidence)
    assert all(note[e.start : e.end] == e.text and e.weight > 0 for e in top.evidence)
    assert "evidence" not in linear.predict([note], top_k=1)[0].to_dict()["codes"][0]


def test_experiment_reports_the_epoch_of_the_best_dev_score(tmp_path) -> None:
    import json

    from medcoder.config import ExperimentConfig
    from medcoder.training.experiment import run_experiment

    neural = {"type": "textcnn.v1", **SMALL, **ARCHITECTURES["textcnn.v1"], "train": {**SMALL["train"], "epochs": 4}}
    config = validate(
        ExperimentConfig,
        {
            "base": {"data": {"source": {"kind": "synthetic", "n_notes": 80, "n_codes": 6}}},
            "seeds": [0, 1],
            "variants": [{"name": "cnn", "overrides": {"model": neural}}, {"name": "lr", "overrides": {}}],
        },
        source="test",
    )
    rows = run_experiment(config, tmp_path)
    best = []
    for seed in (0, 1):
        info = json.loads((tmp_path / "cnn" / f"seed{seed}" / "config.json").read_text())["info"]
        best.append(info["training"]["members"][0]["best_epoch"])
    assert rows[0]["best epoch"]["values"] == best and 1 <= min(best) <= max(best) <= 4
    assert rows[1]["best epoch"]["mean"] is None  # a convex model has no epochs
    card = (tmp_path / "cnn" / "seed0" / "README.md").read_text()
    assert f"at epoch {best[0]} of " in card and "## Training (early stopping on dev map)" in card
    table = (tmp_path / "results.md").read_text()
    assert "| best epoch |" in table and f"{sum(best) / 2:.1f} ±" in table


def test_experiment_seed_ensemble_row_and_reuse_of_finished_runs(tmp_path) -> None:
    import json

    from medcoder.config import ExperimentConfig
    from medcoder.data.dataset import load_dataset
    from medcoder.inference.model import ModelCoder
    from medcoder.training.experiment import run_experiment

    neural = {"type": "textcnn.v1", **SMALL, **ARCHITECTURES["textcnn.v1"], "train": {**SMALL["train"], "epochs": 3}}
    raw = {
        "base": {"data": {"source": {"kind": "synthetic", "n_notes": 80, "n_codes": 6}}},
        "seeds": [0, 1],
        "seed_ensemble": True,
        "variants": [{"name": "cnn", "overrides": {"model": neural}}, {"name": "lr", "overrides": {}}],
    }
    config = validate(ExperimentConfig, raw, source="test")
    rows = run_experiment(config, tmp_path)
    assert [r["variant"] for r in rows] == ["cnn", "cnn (ensemble of 2 seeds)", "lr", "lr (ensemble of 2 seeds)"]
    single, ensemble = rows[0], rows[1]
    assert ensemble["ensemble"] and ensemble["seeds"] == [0, 1] and ensemble["MAP"]["sd"] is None
    assert ensemble["train s"]["mean"] == pytest.approx(sum(single["train s"]["values"]))

    # The ensemble ranks test notes by the mean of its two models' scores.
    test = load_dataset(config.runs()[0][2].data)["test"]
    bundles = [ModelCoder.open(tmp_path / "cnn" / f"seed{seed}").bundle for seed in (0, 1)]
    member_scores = [b.model.predict_scores([note.text for note in test]) for b in bundles]
    y_test = bundles[0].labels.transform([note.labels for note in test])
    assert not np.allclose(member_scores[0], member_scores[1])  # two seeds, two different models
    expected = mean_average_precision(y_test, np.mean(member_scores, axis=0))
    assert ensemble["MAP"]["mean"] == pytest.approx(expected, abs=1e-9)
    # The linear model is deterministic: its ensemble of two equal models scores as one of them.
    assert rows[3]["MAP"]["mean"] == pytest.approx(rows[2]["MAP"]["values"][0], abs=1e-12)

    table = (tmp_path / "results.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith("| cnn (ensemble of 2 seeds) |"))
    assert "| ens. of 2 |" in line and "±" not in line and f"| {expected:.3f} |" in line
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == 4 and [e["members"] for e in saved["ensembles"]] == [[0, 1], [0, 1]]

    # Running again reuses every finished run; a changed variant is the only one trained again.
    weights = {v: (tmp_path / v / "seed0" / "model.safetensors").stat().st_mtime_ns for v in ("cnn",)}
    assert run_experiment(config, tmp_path) == rows
    assert (tmp_path / "cnn" / "seed0" / "model.safetensors").stat().st_mtime_ns == weights["cnn"]
    raw["variants"][0]["overrides"]["model"]["dropout"] = 0.3
    changed = run_experiment(validate(ExperimentConfig, raw, source="test"), tmp_path)
    assert (tmp_path / "cnn" / "seed0" / "model.safetensors").stat().st_mtime_ns != weights["cnn"]
    assert json.loads((tmp_path / "cnn" / "seed0" / "config.json").read_text())["run"]["model"]["dropout"] == 0.3
    assert changed[2:] == rows[2:]  # the linear variant was read back, not retrained (same timings)
