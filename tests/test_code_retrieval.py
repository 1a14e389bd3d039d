"""Mention extraction, the bi-encoder and its no-duplicate batches, fusion and open-set metrics."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.data.synthetic import code_title, generate_notes, surface_forms
from medcoder.data.synthetic_lexicon import INVENTORY
from medcoder.errors import ConfigError, MedcoderError
from medcoder.evaluation.open_set import (
    evaluate_open_set,
    open_set_figures,
    suggestion_figures,
    tune_open_set_threshold,
)
from medcoder.retrieval.biencoder import BiEncoder, Pair, hard_triplets, no_duplicate_batches
from medcoder.retrieval.fusion import fuse, novel_suggestions, tune_fusion, tune_novel_threshold
from medcoder.retrieval.mentions import MentionExtractor


@pytest.fixture(scope="module")
def extractor() -> MentionExtractor:
    return MentionExtractor()


def _by_text(mentions):
    return {m.text.lower(): m.excluded for m in mentions}


def test_mentions_are_clinical_phrases_with_their_context(extractor) -> None:
    text = (
        "A 45-year-old man presented with chest pain and shortness of breath. He denies fever but reports "
        "productive cough. No evidence of pulmonary embolism. Mother with type 2 diabetes mellitus. "
        "If hematuria develops, he should return. CT showed non-Hodgkin lymphoma."
    )
    found = extractor.extract(text)
    assert _by_text(found) == {
        "chest pain": None,
        "shortness of breath": None,
        "fever": "negated",
        "productive cough": None,
        "pulmonary embolism": "negated",
        "type 2 diabetes mellitus": "family_history",
        "hematuria": "hypothetical",
        "non-hodgkin lymphoma": None,
    }
    assert all(text[m.start : m.end] == m.text for m in found)  # offsets point into the note
    assert [m.text for m in extractor.codable(text)] == [
        "chest pain",
        "shortness of breath",
        "productive cough",
        "non-Hodgkin lymphoma",
    ]
    # "but" ends the scope of "denies"; "ruled out" after the phrase negates it too
    assert _by_text(extractor.extract("Sepsis was ruled out. Anemia is present.")) == {
        "sepsis": "negated",
        "anemia": None,
    }


def test_family_history_section_excludes_its_mentions(extractor) -> None:
    text = "HISTORY:\nAsthma.\n\nFAMILY HISTORY:\nBreast cancer.\n\nASSESSMENT:\nAcute bronchitis."
    assert _by_text(extractor.extract(text)) == {
        "asthma": None,
        "breast cancer": "family_history",
        "acute bronchitis": None,
    }


def test_mentions_on_synthetic_notes_find_coded_spans_and_drop_distractors(extractor) -> None:
    notes = generate_notes(SyntheticSource(n_notes=60, seed=5))
    coded = found = 0
    distractors = leaked = 0
    for note in notes:
        mentions = extractor.extract(note.text)
        codable = [m for m in mentions if m.excluded is None]
        for span in note.spans:
            coded += 1
            found += any(m.start < span.end and span.start < m.end for m in codable)
        for item in note.meta["uncoded_mentions"]:
            distractors += 1
            leaked += any(m.start < item["end"] and item["start"] < m.end for m in codable)
    assert coded > 300 and distractors > 50
    assert found / coded > 0.9  # measured 0.945 on 200 notes
    assert leaked / distractors < 0.05  # negated, ruled out, hypothetical, family history: measured 0 leaks


def test_no_duplicate_batches_keep_every_pair_once_and_a_code_once_per_batch() -> None:
    rng = random.Random(0)
    pairs = [Pair(f"mention {i}", f"C{rng.randint(0, 29)}", "") for i in range(400)]
    batches = no_duplicate_batches(pairs, 16, random.Random(1))
    assert all(len({p.code for p in batch}) == len(batch) for batch in batches)
    used = [p for batch in batches for p in batch]
    # each pair at most once; only a pair left alone in a last batch (no negatives) is dropped
    assert len({p.query for p in used}) == len(used) >= len(pairs) - 2
    assert sum(len(b) == 16 for b in batches) >= len(batches) - 3
    one_code = [Pair(str(i), "C1", "") for i in range(5)]
    assert no_duplicate_batches(one_code, 4, random.Random(0)) == []  # every batch would repeat the code
    with pytest.raises(MedcoderError, match="batch_size"):
        no_duplicate_batches(pairs, 1, rng)


def test_hard_negatives_are_the_top_wrong_codes_and_batches_keep_them_apart() -> None:
    from medcoder.retrieval.biencoder import mine_hard_negatives
    from medcoder.retrieval.index import CodeIndex

    class Axes:  # query i points along axis i
        def encode(self, texts):
            return np.stack([np.eye(4)[int(t)] for t in texts])

    # the index ranks, for query "0": E11.9 (gold), E11.65 (a sibling of gold), I10 (wrong), J45 (wrong)
    index = CodeIndex(
        ["E11.9", "E11.65", "I10", "J45"],
        np.array([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0.8, 0, 0.2, 0], [0.1, 0, 0, 1]]),
    )
    descriptions = dict.fromkeys(index.codes, "d") | {"I10": "Essential (primary) hypertension"}
    pairs = [Pair("0", "E11.9", "Type 2 diabetes", note=0), Pair("3", "R52", "Pain", note=1)]
    mined = mine_hard_negatives(Axes(), pairs, [["E11.9"], ["R52", "J45"]], index, descriptions, k=4)
    assert (mined[0].negative_code, mined[0].negative) == ("I10", "Essential (primary) hypertension")
    assert mined[1].negative_code == "E11.9"  # J45 is gold for note 1
    with pytest.raises(MedcoderError, match="name their note"):
        mine_hard_negatives(Axes(), [Pair("0", "E11.9", "d")], [["E11.9"]], index, descriptions)
    # a pair never shares a batch with the pair whose positive is its negative
    batches = no_duplicate_batches(
        [Pair(str(i), f"C{i}", "", negative_code=f"C{i + 1}") for i in range(40)], 8, random.Random(0)
    )
    assert all(not {p.code for p in b} & {p.negative_code for p in b} for b in batches)


@pytest.fixture(scope="module")
def tiny_sentence_encoder(tiny_bert) -> str:
    """The tiny random BERT; sentence-transformers adds mean pooling when it loads it."""
    return tiny_bert


def _form_pairs() -> list[Pair]:
    return [Pair(form, e.code, code_title(e.code)) for e in INVENTORY[:40] for form in surface_forms(e.code)]


def catalog_code_of(description: str, catalog: dict[str, str]) -> str:
    return next(code for code, text in catalog.items() if text == description)


def _top1(encoder: BiEncoder, pairs: list[Pair]) -> float:
    codes = sorted({p.code for p in pairs})
    titles = encoder.encode([code_title(c) for c in codes])
    best = (encoder.encode([p.query for p in pairs]) @ titles.T).argmax(axis=1)
    return float(np.mean([codes[b] == p.code for b, p in zip(best, pairs, strict=True)]))


def test_biencoder_learns_to_match_mentions_to_code_titles(tiny_sentence_encoder, tmp_path) -> None:
    pairs = _form_pairs()
    encoder = BiEncoder.load(tiny_sentence_encoder, max_seq_length=32)
    before = _top1(encoder, pairs)
    catalog = {c: code_title(c) for c in {e.code for e in INVENTORY}}
    triplets = hard_triplets(encoder, pairs, catalog, sorted(catalog))
    assert all(
        catalog_code_of(n, catalog)[:3] != catalog_code_of(p, catalog)[:3] for _, p, n in zip(*triplets, strict=True)
    )
    report = encoder.fit(pairs, train=_train(epochs=8), dev_triplets=triplets)
    after = _top1(encoder, pairs)
    losses = [e["loss"] for e in report["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    assert after > 0.85 and after > before + 0.3, (before, after)  # measured 0.42 -> 0.95
    assert report["best_dev_triplet_accuracy"] > report["dev_triplet_accuracy_before"] and report["best_epoch"] > 0
    encoder.save(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").is_file() and not list((tmp_path / "enc").rglob("*.bin"))
    reloaded = BiEncoder.load(str(tmp_path / "enc"), max_seq_length=32)
    np.testing.assert_allclose(reloaded.encode(["acute bronchitis"]), encoder.encode(["acute bronchitis"]), atol=1e-5)


def _train(**options):
    from medcoder.config.retrieval import BiEncoderTrainConfig

    return BiEncoderTrainConfig(**{"batch_size": 32, "lr": 1e-3, **options}).loop_config()


class Killed(Exception):
    pass


def test_a_killed_biencoder_run_resumes_to_the_same_weights(tiny_sentence_encoder, tmp_path) -> None:
    """The bi-encoder trains through the shared loop: checkpoints, and a resume that ends where a clean run ends."""
    pairs = _form_pairs()
    reference = BiEncoder.load(tiny_sentence_encoder, max_seq_length=32)
    reference.fit(pairs, train=_train(epochs=3), seed=4)
    totals = []

    def kill_at_step_7(done, total):
        totals.append(total)
        if done >= 7:
            raise Killed

    killed = BiEncoder.load(tiny_sentence_encoder, max_seq_length=32)
    with pytest.raises(Killed):
        killed.fit(
            pairs,
            train=_train(epochs=3, checkpoint_every_steps=2),
            seed=4,
            work_dir=tmp_path / "ckpt",
            progress=kill_at_step_7,
        )
    assert totals[0] > 7 and (tmp_path / "ckpt" / "last").is_dir()
    resumed = BiEncoder.load(tiny_sentence_encoder, max_seq_length=32)
    again = resumed.fit(pairs, train=_train(epochs=3, checkpoint_every_steps=2), seed=4, work_dir=tmp_path / "ckpt")
    assert again["resumed_from_step"] == 6  # the last checkpoint before the kill
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_fusion_adds_retrieval_above_the_floor_and_brings_in_unseen_codes() -> None:
    classifier = [{"A": 0.5, "B": 0.2}]
    retrieval = [{"B": 0.8, "C": 0.65, "D": 0.3}]
    fused = fuse(classifier, retrieval, weight=1.0, floor=0.5)
    assert fused[0] == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.15})  # D: below the floor, not scored
    assert fuse(classifier, retrieval, weight=0.0, floor=0.5) == classifier
    # codes the classifier never saw get their own weight
    split = fuse(classifier, retrieval, weight=1.0, floor=0.5, novel_weight=2.0, known={"A", "B"})
    assert split[0] == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.3})


def test_open_set_metrics_by_hand() -> None:
    scores = [{"A": 0.9, "B": 0.8, "C": 0.1}, {"D": 0.5}]
    gold = [["B", "X"], ["D"]]  # X: scored by nobody, a miss that adds 0 to AP
    result = open_set_figures(scores, gold, threshold=0.5, k=1)
    assert result["map"] == pytest.approx(((1 / 2) / 2 + 1.0) / 2)
    assert result["recall@1"] == pytest.approx(1 / 3)
    # predicted: A, B, D -> tp 2 (B, D), fp 1, fn 1 (X)
    assert result["micro_precision"] == pytest.approx(2 / 3) and result["micro_recall"] == pytest.approx(2 / 3)
    # unseen gold: B and D leave the gold sets and the rankings; only note 0 keeps a gold code (X, a miss)
    unseen = evaluate_open_set(scores, gold, seen={"B", "D"})["unseen"]
    assert unseen == {"notes": 1, "gold_assignments": 1, "map": 0.0, "recall@10": 0.0}


def test_threshold_and_fusion_are_tuned_on_the_data_given() -> None:
    scores = [{"A": 0.9, "B": 0.4, "C": 0.3}, {"A": 0.2, "B": 0.6}]
    assert tune_open_set_threshold(scores, [["A", "B"], ["B"]]) == pytest.approx(0.4)
    classifier = [{"A": 0.3}, {"A": 0.3}]
    retrieval = [{"N": 0.9, "A": 0.2}, {"M": 0.1}]  # N is unseen and right in note 0
    params, grid = tune_fusion(
        classifier, retrieval, [["A", "N"], ["A"]], known={"A"}, weights=(0.0,), novel_weights=(0.0, 1.0), floors=(0.5,)
    )
    assert params.novel_weight == 1.0 and len(grid) == 2
    assert grid[0]["map"] == pytest.approx((0.5 + 1.0) / 2) and grid[1]["map"] == pytest.approx(1.0)


def test_retrieval_run_fuses_with_a_classifier_and_codes_new_notes(
    cli, synthetic_run, tiny_sentence_encoder, tmp_path
) -> None:
    from conftest import SYNTHETIC_SOURCE, write_yaml

    classifier_codes = json.loads((synthetic_run.bundle / "labels.json").read_text())["codes"]
    left_out = classifier_codes[0][:3]  # a category the classifier knows but the index leaves out
    categories = sorted({e.code[:3] for e in INVENTORY} - {left_out})
    config = write_yaml(
        tmp_path / "retrieval.yaml",
        {
            "kind": "retrieval",
            "data": {"source": SYNTHETIC_SOURCE},
            "encoder": tiny_sentence_encoder,
            "max_seq_length": 32,
            "classifier": str(synthetic_run.bundle),
            "train": {"epochs": 3, "batch_size": 32, "lr": 1e-3},
            "index": {"prefixes": categories},
            "fusion": {"weights": [0.0, 0.1, 1.0], "novel_weights": [0.0, 1.0], "floors": [0.5, 0.8]},
        },
    )
    result = cli("retrieval", config, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (run["format"], run["kind"], run["classifier"], run["retrieval"]["encoder"]) == (
        "medcoder.bundle.v2",
        "retrieval",
        "classifier",
        "retrieval/encoder",  # the layout of the encoder + index part, as in a reranker
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "classifier",
        "config.json",
        "results.md",
        "retrieval",
    ]
    assert (tmp_path / "run" / "retrieval" / "encoder" / "model.safetensors").is_file()
    assert run["index"]["codes"] > 300 and not run["index"]["from_cache"]
    assert not (tmp_path / "run.checkpoints").exists()  # bi-encoder checkpoints go once the bundle is saved
    assert run["info"]["versions"]["sentence-transformers"] and run["info"]["versions"]["torch"]
    losses = [e["loss"] for e in run["training"]["epochs"]]
    assert run["training"]["pairs"] > 500 and losses[-1] < losses[0]
    metrics = run["metrics"]
    # the tiny encoder learned the synthetic forms: retrieval alone ranks gold codes far above chance
    assert metrics["retrieval"]["all"]["recall@10"] > 0.3
    # fusion is tuned on dev; on test it must at least keep the classifier's ranking quality
    assert metrics["fused"]["all"]["map"] >= metrics["classifier"]["all"]["map"] - 0.02
    assert {row["weight"] for row in run["fusion"]["dev_grid"]} == {0.0, 0.1, 1.0}
    assert "| fused |" in (tmp_path / "run" / "results.md").read_text()
    sweep = run["fusion"]["novel_weight_sweep"]
    assert [row["novel_weight"] for row in sweep] == [0.0, 1.0]
    unseen_recall = sweep[0]["test"]["unseen_recall@10"]  # NaN when no test gold code is unseen in train
    assert unseen_recall == 0.0 or np.isnan(unseen_recall)  # no weight: codes the classifier never saw never rank
    assert all(row[split]["map"] > 0 for row in sweep for split in ("dev", "test"))

    # a bundle like any other: moved elsewhere (every path inside is relative), it loads and codes the same
    import shutil

    import medcoder

    note = "She was found to have atrial fibrillation. She denies chest pain."
    coder = medcoder.load(tmp_path / "run")
    before = coder.predict([note], top_k=5, explain=True)  # evidence only when asked, as for every system
    assert set(classifier_codes) <= set(coder.codes) and not any(c.startswith(left_out) for c in coder.index.codes)
    scores = coder.predict_proba([note])  # columns: the index's codes, then those only the classifier knows
    assert scores.shape == (1, len(coder.codes)) and scores[0, coder.codes.index(classifier_codes[0])] > 0
    shutil.move(tmp_path / "run", tmp_path / "moved" / "renamed")
    result = cli("predict", tmp_path / "moved" / "renamed", "--top-k", "5", "--explain", stdin=note.encode())
    assert result.code == 0, result.err
    assert json.loads(result.out)["codes"] == before[0].to_dict()["codes"]
    evaluated = cli("evaluate", tmp_path / "moved" / "renamed")  # any saved system evaluates on its own test split
    assert evaluated.code == 0, evaluated.err
    assert "| system | MAP | micro-F1 |" in evaluated.out  # the open-set table every sparse system prints
    table_map = float(evaluated.out.splitlines()[2].split("|")[2])
    assert table_map == pytest.approx(metrics["fused"]["all"]["map"], abs=5e-4)  # the same figure as the run's
    labels = cli("labels", tmp_path / "moved" / "renamed")  # the label space is its classifier's
    assert labels.code == 0 and "label space: 20 labels" in labels.out
    prediction = json.loads(result.out)
    assert isinstance(prediction["new_codes"], list) and len(prediction["new_codes"]) <= 3
    assert not {c["code"] for c in prediction["new_codes"]} & set(
        json.loads((synthetic_run.bundle / "labels.json").read_text())["codes"]
    )  # only codes the classifier never saw
    assert 5 <= len(prediction["codes"]) and [c["rank"] for c in prediction["codes"]][:5] == [1, 2, 3, 4, 5]
    for code in prediction["codes"]:
        for evidence in code["evidence"]:
            assert note[evidence["start"] : evidence["end"]] == evidence["text"] != "chest pain"  # negated: no evidence


def test_retrieval_input_errors_are_one_line_and_early(cli, tmp_path) -> None:
    from conftest import SYNTHETIC_SOURCE, write_yaml

    import medcoder
    from medcoder.errors import BundleError

    config = write_yaml(
        tmp_path / "r.yaml", {"data": {"source": SYNTHETIC_SOURCE}, "classifier": str(tmp_path / "nope")}
    )
    result = cli("retrieval", config, "-o", tmp_path / "run")
    assert result.code == 2 and "nope: not a model directory" in result.err and not (tmp_path / "run").exists()
    result = cli("retrieval", write_yaml(tmp_path / "typo.yaml", {"serch": {"k": 5}}), "-o", tmp_path / "run")
    assert result.code == 2 and "serch" in result.err
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "retrieval.json").write_text('{"format": "medcoder.retrieval_run.v1"}')
    with pytest.raises(BundleError, match="retrieval folder of medcoder 0.1.*run `medcoder retrieval` again"):
        medcoder.load(tmp_path / "fake")
    header = {"format": "medcoder.bundle.v2", "kind": "retrieval", "config": {"k": 3}}
    (tmp_path / "fake" / "config.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match=r"config\.json: unknown key 'config\.k'; missing required key 'retrieval'"):
        medcoder.load(tmp_path / "fake")
    good = {
        **header,
        "config": {},
        "fusion": {"threshold": 0.5},
        "encoder": "biencoder",  # the layout retrieval bundles had before the encoder + index part had one
        "index": {"folder": "index", "encoder_fingerprint": "abc"},
    }
    for broken, message in [
        ({"index": "index"}, "retrieval.index: Input should be a valid string"),  # a named key, no traceback
        ({"fusion": {"threshold": "high"}}, "fusion.threshold: Input should be a valid number"),
        ({"encoder": "/abs/path"}, "its sentence encoder must be a folder inside the bundle, got '/abs/path'"),
        ({"encoder": "../elsewhere"}, "its sentence encoder must be a folder inside the bundle"),
        ({}, "its sentence encoder \\(biencoder/\\) is missing"),
        (
            {"kind": "reranker"},
            "config.json: unknown saved system kind 'reranker' \\(known: model, rerank, retrieval\\)",
        ),
    ]:
        (tmp_path / "fake" / "config.json").write_text(json.dumps({**good, **broken}))
        with pytest.raises(MedcoderError, match=message):
            medcoder.load(tmp_path / "fake")


def test_fusion_needs_a_multilabel_classifier(cli, tmp_path) -> None:
    from conftest import write_jsonl, write_yaml

    notes = generate_notes(SyntheticSource(n_notes=120, n_codes=6, seed=2))
    path = write_jsonl(
        tmp_path / "first-code.jsonl",
        [{"id": n.id, "text": n.text, "labels": [n.labels[0]], "split": n.split} for n in notes],
    )
    source = {"kind": "jsonl", "path": str(path)}
    single = write_yaml(
        tmp_path / "single.yaml",
        {
            "task": {"type": "multiclass"},
            "data": {"source": source},
            "labels": {"system": "icd10cm"},
            "model": {"type": "tfidf_lr.v1", "n_jobs": 1},
        },
    )
    assert cli("train", single, "-o", tmp_path / "single").code == 0
    config = write_yaml(tmp_path / "r.yaml", {"data": {"source": source}, "classifier": str(tmp_path / "single")})
    result = cli("retrieval", config, "-o", tmp_path / "run")
    assert result.code == 2 and "fusion needs a multi-label classifier; this one is a multiclass model" in result.err


def test_new_codes_are_suggested_apart_above_a_dev_tuned_cosine() -> None:
    retrieval = [{"A": 0.9, "N1": 0.8, "N2": 0.5, "N3": 0.7}, {"N4": 0.6, "N5": 0.4}]
    known = {"A"}
    assert novel_suggestions(retrieval, known, threshold=0.55, top=2) == [{"N1": 0.8, "N3": 0.7}, {"N4": 0.6}]
    gold = [["A", "N1"], ["N4"]]
    threshold = tune_novel_threshold(retrieval, gold, known, top=3)
    assert threshold == pytest.approx(0.6)  # keeps N1, N3 and N4: 2 of 3 right, both new gold codes found
    metrics = suggestion_figures(novel_suggestions(retrieval, known, threshold=threshold, top=3), gold, known)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == 1.0
    assert metrics["suggested_per_note"] == 1.5 and metrics["gold_new_assignments"] == 2


def test_no_new_codes_are_suggested_when_dev_shows_none_can_be_right() -> None:
    from medcoder.retrieval.fusion import NO_SUGGESTIONS

    retrieval = [{"A": 0.9, "N1": 1.0}, {"N4": 0.6}]
    known = {"A"}
    # dev has no gold code outside the classifier's: before, the threshold became the top cosine (1.0)
    # and an exact description match was always suggested, always wrong
    threshold = tune_novel_threshold(retrieval, [["A"], ["A"]], known, top=3)
    assert threshold == NO_SUGGESTIONS and novel_suggestions(retrieval, known, threshold=threshold, top=3) == [{}, {}]
    # new gold codes on dev, but retrieval finds none of them: the same
    assert tune_novel_threshold(retrieval, [["N7"], ["N8"]], known, top=3) == NO_SUGGESTIONS
