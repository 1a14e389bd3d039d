"""The learned reranker: out-of-fold scores, candidate features, the ranker, the saved ``rerank`` system."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medcoder.errors import ConfigError
from medcoder.evaluation.metrics import mean_average_precision
from medcoder.rerank.features import FeatureBuilder, SplitSignals
from medcoder.rerank.folds import assign_folds, fold_frequencies, out_of_fold_scores
from medcoder.rerank.lexical import CodeTexts, note_stems, stems
from medcoder.rerank.ranker import sparse_map
from medcoder.rerank.signals import CodeEvidence


def test_folds_are_balanced_deterministic_and_frequencies_leave_the_own_fold_out() -> None:
    fold = assign_folds(10, 3, seed=4)
    assert sorted(np.bincount(fold).tolist()) == [3, 3, 4]
    assert fold.tolist() == assign_folds(10, 3, seed=4).tolist() != assign_folds(10, 3, seed=5).tolist()
    y = np.zeros((4, 2), dtype=bool)
    y[:, 0] = True  # in every note
    y[2, 1] = True  # only in note 2
    freq = fold_frequencies(y, np.array([0, 0, 1, 1]))
    assert freq.tolist() == [[2, 1], [2, 1], [2, 0], [2, 0]]  # note 2's own code is unseen by its fold's model


def test_out_of_fold_scores_resume_from_saved_folds(tmp_path, monkeypatch) -> None:
    from medcoder.data.synthetic import SyntheticSource, generate_notes
    from medcoder.models.base import DevSet, build_model
    from medcoder.models.tfidf_lr import TfidfLrConfig

    notes = generate_notes(SyntheticSource(n_notes=90, n_codes=8, seed=3))
    codes = sorted({c for n in notes for c in n.labels})
    y = np.array([[c in n.labels for c in codes] for n in notes], dtype=bool)
    texts = [n.text for n in notes]
    fold = assign_folds(len(notes), 3, seed=0)
    config = TfidfLrConfig(n_jobs=1, C=10)
    kwargs = dict(
        dev=DevSet(texts[:10], y[:10]),
        seed=0,
        label_codes=codes,
        label_descriptions=[None] * len(codes),
        label_system="icd10cm",
        work_dir=tmp_path / "oof",
    )
    first = out_of_fold_scores(config, texts, y, fold, **kwargs)
    assert first.shape == y.shape and sorted(p.name for p in (tmp_path / "oof").glob("*.npy")) == [
        "fold0.npy",
        "fold1.npy",
        "fold2.npy",
    ]
    # out-of-fold scores are worse than scores of notes the model trained on, yet far above chance
    in_sample = build_model(config, n_labels=len(codes), task="multilabel", label_codes=codes, label_system="icd10cm")
    in_sample.fit(texts, y)
    oof_map = mean_average_precision(y, first)
    assert 0.5 < oof_map < mean_average_precision(y, in_sample.predict_scores(texts))

    def no_training(*args, **kwargs):
        raise AssertionError("a saved fold was trained again")

    monkeypatch.setattr("medcoder.rerank.folds.build_model", no_training)
    assert np.array_equal(out_of_fold_scores(config, texts, y, fold, **kwargs), first)


def test_sparse_map_is_the_dense_map_with_missing_gold_adding_zero() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((6, 9))
    y = rng.random((6, 9)) < 0.3
    y[0] = False
    y[0, 2] = True
    n_gold = y.sum(axis=1) + np.array([0, 1, 0, 2, 0, 0])  # some gold codes no candidate holds
    dense = mean_average_precision(y, scores, n_gold=n_gold)
    note = np.repeat(np.arange(6), 9)
    assert sparse_map(note, scores.ravel(), y.ravel(), n_gold) == pytest.approx(dense, abs=1e-12)
    # a note with gold but no candidate at all counts with AP 0
    keep = note != 3
    per_note_without_3 = mean_average_precision(
        np.delete(y, 3, 0), np.delete(scores, 3, 0), n_gold=np.delete(n_gold, 3)
    )
    with_gold = int((np.delete(n_gold, 3) > 0).sum())
    expected = per_note_without_3 * with_gold / (with_gold + 1)
    assert sparse_map(note[keep], scores.ravel()[keep], y.ravel()[keep], n_gold) == pytest.approx(expected, abs=1e-12)


def test_lexical_overlap_uses_descriptions_and_inclusion_terms() -> None:
    texts = CodeTexts("icd10cm", {"R52": "Pain, unspecified", "I10": "Essential (primary) hypertension"})
    note = stems("The patient reports generalized pain NOS. Known hypertensive disease.")
    pain = dict(zip(("share", "all", "words", "inclusion", "inclusion_all"), texts.features("R52", note), strict=True))
    assert pain["share"] == 1.0 and pain["all"] == 1.0  # "pain" ("unspecified" is a stop word)
    assert pain["inclusion"] == 1.0 and pain["inclusion_all"] == 1.0  # "Generalized pain NOS"
    hypertension = texts.features("I10", note)
    assert hypertension[0] == pytest.approx(1 / 3)  # hypert(ensive) ~ hypert(ension); not "essential", "primary"
    none = CodeTexts("none", {"Cardiomegaly": None})
    assert none.features("Cardiomegaly", stems("mild cardiomegaly"))[0] == 1.0  # a label's own name is its text


def test_features_mark_unseen_codes_and_keep_each_sources_rank() -> None:
    codes = ["E11.9", "I10", "R52"]
    builder = FeatureBuilder(
        codes,
        "icd10cm",
        ["a"],
        retrieval=True,
        groups=["frequency", "hierarchy", "lexical"],
        code_texts=CodeTexts("icd10cm", {}),
    )
    signals = SplitSignals(
        stems=note_stems(["diabetes and hypertension"]),
        scores={"a": np.array([[0.9, 0.2, 0.5]], dtype=np.float32)},
        freq=np.array([[3, 0, 2]]),  # I10 unseen by this note's model
        retrieval=[
            {
                "E11.65": CodeEvidence(0.8, 0.7, 2, 1, 0.6, 0, 8),
                "I10": CodeEvidence(0.9, 0.9, 1, 0, float("nan"), 13, 25),
            }
        ],
        gold=[["E11.65", "I10"]],
    )
    candidates = builder.build(signals, k=2)
    assert candidates.codes == ["E11.65", "E11.9", "I10", "R52"]
    x = dict(zip(candidates.codes, candidates.x, strict=True))
    column = {name: i for i, name in enumerate(candidates.names)}
    assert np.isnan(x["I10"][column["a.score"]])  # outside the model's label space for this note
    assert x["E11.9"][column["a.rank"]] == 1 and x["R52"][column["a.rank"]] == 2
    assert x["E11.65"][column["retrieval.excluded_share"]] == pytest.approx(1 / 3)
    assert x["I10"][column["frequency.unseen"]] == 1 and x["E11.9"][column["frequency.log"]] == pytest.approx(np.log(4))
    assert x["E11.65"][column["hierarchy.a.category"]] == pytest.approx(0.9)  # E11.9's score, same category
    assert x["E11.65"][column["hierarchy.sibling_candidates"]] == 1
    assert candidates.y.tolist() == [True, False, True, False] and candidates.n_gold.tolist() == [2]
    only_a = candidates.subset(1, [0], builder.columns_without("retrieval"))
    assert only_a.codes == ["E11.9"] and not any(n.startswith("retrieval") for n in only_a.names)
    assert not any("retrieval" in n for n in only_a.names)


def test_catalog_children_propose_the_unseen_code_the_note_describes() -> None:
    from medcoder.data.icd import code_at_level
    from medcoder.rerank.children import CatalogChildren

    catalog = ["E11", "E11.21", "E11.22", "E11.9", "E11.65", "I10", "I12", "I12.9", "R52"]
    texts = CodeTexts("icd10cm", {})
    children = CatalogChildren(
        "icd10cm", texts, lambda c: code_at_level(c, "icd10cm", "category"), k=3, catalog=catalog
    )
    builder = FeatureBuilder(
        ["E11.9", "I10", "R52"],
        "icd10cm",
        ["a"],
        retrieval=False,
        groups=["frequency", "hierarchy", "mentions"],
        code_texts=texts,
        children=children,
        category_depth=1,
    )
    said = [stems("type 2 diabetes"), stems("chronic kidney disease")]
    signals = SplitSignals(
        stems=note_stems(["type 2 diabetes with chronic kidney disease; no pain"]),
        scores={"a": np.array([[0.9, 0.2, 0.5]], dtype=np.float32)},
        freq=np.array([[3, 4, 2]]),
        gold=[["E11.22"]],
        mentions=[(said, [stems("pain")])],
    )
    candidates = builder.build(signals, k=1)
    column = {name: i for i, name in enumerate(candidates.names)}
    x = dict(zip(candidates.codes, candidates.x, strict=True))
    # only E11 (the category of the base's best code) is expanded, and only into codes the model never saw
    proposed = {c: v[column["children.rank"]] for c, v in x.items() if not np.isnan(v[column["children.rank"]])}
    assert proposed == {"E11.22": 1.0}  # k = 1 candidate per source: the child whose own words the note says
    assert x["E11.22"][column["children.specific_share"]] == 1.0  # "with diabetic chronic kidney disease"
    assert x["E11.22"][column["children.category_rank"]] == 1.0
    assert x["E11.22"][column["children.specific_words"]] == 3  # chronic, kidney, disease: "diabetic" is E11's
    assert candidates.y[candidates.codes.index("E11.22")] and candidates.unseen[candidates.codes.index("E11.22")]
    wider = builder.build(signals, k=3)
    ranks = {c: r for c, r in zip(wider.codes, wider.source_rank[:, -1], strict=True) if np.isfinite(r)}
    assert ranks["E11.22"] == 1 and set(ranks) <= {"E11", "E11.21", "E11.22", "E11.65"} and "E11.9" not in ranks
    # with retrieval's index, a child also scores by the cosine of the note's mentions to its catalog vector
    from medcoder.retrieval.index import CodeIndex

    children.use_index(CodeIndex(["E11.21", "E11.22"], np.array([[1.0, 0.0], [0.6, 0.8]])))
    near = [([0.0, 1.0], 0.25 * 1.0 + 0.8), ([1.0, 0.0], 0.6 + 0.25)]  # (mention vector, E11.22's score)
    for vector, _ in near:
        signals.mention_vectors = [np.array([vector], dtype=np.float32)]
        x = dict(zip(*(lambda c: (c.codes, c.x))(builder.build(signals, k=1)), strict=True))
        rank_one = [c for c, v in x.items() if v[column["children.rank"]] == 1]
        cosine = {c: x[c][column["children.cosine"]] for c in rank_one}
        # mention along E11.22: it wins (0.8 + 0.25 share); along E11.21: E11.21 wins (1.0 against 0.6 + 0.25)
        assert rank_one == (["E11.22"] if vector == [0.0, 1.0] else ["E11.21"])
        assert cosine[rank_one[0]] == pytest.approx(0.8 if vector == [0.0, 1.0] else 1.0)
    assert builder.sources == ["a", "children"] and builder.columns_without("children") == [
        i for i, n in enumerate(builder.names) if not n.startswith("children.")
    ]


def _config(tmp_path, **extra):
    from conftest import write_yaml

    data = {
        "kind": "rerank",
        "name": "tiny-rerank",
        "data": {"source": {"kind": "synthetic", "n_notes": 240, "n_codes": 25, "seed": 2}},
        "labels": {"system": "icd10cm"},
        "folds": 3,
        "bases": [
            {"name": "unigrams", "model": {"type": "tfidf_lr.v1", "ngram_range": [1, 1], "C": 10, "n_jobs": 1}},
            {"name": "bigrams", "model": {"type": "tfidf_lr.v1", "ngram_range": [2, 2], "C": 10, "n_jobs": 1}},
        ],
        "candidates": [3, 8],
        "ranker": {"n_estimators": 300, "early_stopping_rounds": 30},
        **extra,
    }
    return write_yaml(tmp_path / "rerank.yaml", data)


def test_rerank_run_beats_its_bases_calibrates_and_saves_a_system(cli, tmp_path, tiny_bert) -> None:
    import medcoder
    from medcoder.data.synthetic import INVENTORY

    categories = sorted({e.code[:3] for e in INVENTORY})
    retrieval = {"encoder": tiny_bert, "max_seq_length": 32, "index": {"prefixes": categories}}
    config = _config(tmp_path, retrieval=retrieval, children={"k": 5, "categories": 3})
    result = cli("train", config, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "| reranker |" in result.out and "Leave one signal out" in result.out
    run = tmp_path / "run"
    header = json.loads((run / "config.json").read_text())
    assert (header["kind"], header["format"]) == ("rerank", "medcoder.bundle.v2")
    assert sorted(p.name for p in run.iterdir()) == [
        "bases",
        "calibration.json",
        "config.json",
        "ranker.txt",
        "results.md",
        "retrieval",
    ]
    assert not (tmp_path / "run.work").exists()  # the work folder goes once the bundle is saved
    metrics = header["metrics"]
    best_base = max(metrics["unigrams"]["all"]["map"], metrics["bigrams"]["all"]["map"])
    assert metrics["reranker"]["all"]["map"] >= best_base - 0.01
    assert metrics["reranker"]["all"]["micro_f1"] > 0.6
    assert set(header["leave_one_out"]) == {
        "unigrams",
        "bigrams",
        "retrieval",
        "children",
        "frequency",
        "hierarchy",
        "lexical",
        "mentions",
    }
    assert header["candidates"]["k"] in (3, 8) and len(header["candidates"]["per_k"]) == 2
    calibration = header["calibration"]
    assert calibration["test"]["after"]["ece"] < calibration["test"]["before"]["ece"]
    assert {row["method"] for row in calibration["choice"]} == {"none", "temperature", "platt", "isotonic"}

    # a bundle like any other: moved, loaded, it scores the test split as the run did
    shutil.move(run, tmp_path / "moved")
    coder = medcoder.load(tmp_path / "moved")
    assert coder.kind == "rerank"
    from medcoder.data.dataset import load_dataset

    test_notes = load_dataset(coder.data_config())["test"]
    again = coder.evaluate(test_notes)
    assert again["all"]["map"] == pytest.approx(metrics["reranker"]["all"]["map"], abs=1e-9)
    note = test_notes[0].text
    [prediction] = coder.predict([note], top_k=3, explain=True)
    assert [c.rank for c in prediction.codes][:3] == [1, 2, 3]
    probabilities = [c.probability for c in prediction.codes]
    assert probabilities == sorted(probabilities, reverse=True) and 0 <= min(probabilities) <= max(probabilities) <= 1
    sources = {span.source for code in prediction.codes for span in code.evidence}
    assert {"unigrams", "bigrams"} <= sources
    for code in prediction.codes:
        for span in code.evidence:
            assert note[span.start : span.end] == span.text
    dense = coder.predict_proba([note])
    top = prediction.codes[0]
    assert dense[0, coder.codes.index(top.code)] == pytest.approx(top.probability, abs=1e-6)
    out = cli("predict", tmp_path / "moved", "--top-k", "2", "--explain", stdin=note.encode())
    assert out.code == 0, out.err
    assert json.loads(out.out)["codes"][0]["evidence"][0]["source"] in {"unigrams", "bigrams", "retrieval"}


def test_a_killed_rerank_run_resumes_without_training_the_bases_again(cli, tmp_path, monkeypatch) -> None:
    config = _config(tmp_path, leave_one_out=False, candidates=[5], work_dir=str(tmp_path / "work"))
    from medcoder.rerank import ranker

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ranker.Ranker, "fit", crash)
        assert cli("train", config, "-o", tmp_path / "run").code != 0  # Ctrl-C while the ranker trains
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in (tmp_path / "work" / "bases").iterdir()) == ["bigrams", "unigrams"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished base was trained again")

    monkeypatch.setattr("medcoder.rerank.folds.build_model", no_training)
    monkeypatch.setattr("medcoder.training.rerank.train_run", no_training)
    result = cli("train", config, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert (tmp_path / "work").is_dir()  # a work folder the config names is kept for the next run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bases": []}, "bases"),
        (
            {
                "bases": [
                    {"name": "a", "model": {"type": "tfidf_lr.v1"}},
                    {"name": "a", "model": {"type": "tfidf_lr.v1"}},
                ]
            },
            "base names must be unique, repeated: a",
        ),
        ({"bases": [{"name": "lexical", "model": {"type": "tfidf_lr.v1"}}]}, "names a signal or feature group"),
        ({"labels": {"system": "none"}, "retrieval": {}}, "labels.system must be 'icd10cm'"),
        ({"candidates": [0]}, "candidate counts must be >= 1"),
        ({"labels": {"system": "none"}, "children": {}}, "children proposes codes from an ICD-10 catalog"),
    ],
)
def test_rerank_config_errors_are_one_line(cli, tmp_path, change, message) -> None:
    result = cli("train", _config(tmp_path, **change), "-o", tmp_path / "run")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_a_rerank_config_loads_as_such_and_other_commands_refuse_it(tmp_path) -> None:
    from medcoder.config import load_config
    from medcoder.config.rerank import RerankConfig

    path = _config(tmp_path)
    assert isinstance(load_config(path, ("train", "rerank")), RerankConfig)
    with pytest.raises(ConfigError, match="use `medcoder train`"):
        load_config(path, "retrieval")


def test_mention_features_tell_a_negated_finding_from_a_present_one() -> None:
    texts = CodeTexts("none", {"Pleural Effusion": None, "Cardiomegaly": None})
    codable, excluded = [stems("small effusion"), stems("mild cardiomegaly")], [stems("pleural effusion")]
    assert texts.mention_features("Pleural Effusion", codable, excluded) == [0.5, 1.0]
    assert texts.mention_features("Cardiomegaly", codable, excluded) == [1.0, 0.0]


def test_a_saved_system_builds_candidates_as_its_run_did() -> None:
    """The run builds at its largest k and cuts; so does RerankCoder: the same rows, features and order."""
    codes = ["E11.9", "E11.65", "I10", "R52", "R50.9"]
    builder = FeatureBuilder(
        codes,
        "icd10cm",
        ["a"],
        retrieval=False,
        groups=["frequency", "hierarchy", "lexical"],
        code_texts=CodeTexts("icd10cm", {}),
    )
    signals = SplitSignals(
        stems=note_stems(["fever and diabetes"]),
        scores={"a": np.array([[0.9, 0.8, 0.2, 0.5, 0.4]], dtype=np.float32)},
        freq=np.array([[3, 2, 1, 2, 2]]),
    )
    wide = builder.build(signals, k=5).subset(2, [0], range(len(builder.names)))
    assert wide.codes == ["E11.65", "E11.9"]
    column = builder.names.index("hierarchy.sibling_candidates")
    assert wide.x[:, column].tolist() == [1.0, 1.0]
    assert wide.source_rank.ravel().tolist() == [2.0, 1.0]


def test_stems_keep_accented_words_whole() -> None:
    assert stems("Síndrome febril, niño") == {"síndro", "febril", "niño"}  # not "ndrome", "ni", "o"


def test_a_span_several_signals_found_comes_once_and_first() -> None:
    from medcoder.inference.records import Evidence
    from medcoder.inference.rerank import _agreed_first

    spans = [
        Evidence(0, 5, "fever", 0.9, "tfidf"),
        Evidence(10, 14, "pain", 0.5, "tfidf"),
        Evidence(10, 14, "pain", 0.7, "svm"),
        Evidence(20, 24, "cough", 0.4, "svm"),
    ]
    merged = _agreed_first(spans)
    assert [(s.start, s.source) for s in merged] == [(10, "tfidf"), (0, "tfidf"), (20, "svm")]
