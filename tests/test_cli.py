"""The ``medcoder`` command line, end to end on small synthetic data.

Commands run in-process through ``medcoder.cli.main`` (captured with capsys);
two run as real subprocesses to prove the installed entry point and exit codes.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_MODEL, SYNTHETIC_SOURCE, TrainedRun, write_jsonl, write_yaml

from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.data.synthetic import code_inventory, generate_notes, surface_forms

AF_CODE = "I48.91"
# The code under test must be in the 20-code inventory the session model is trained on.
assert AF_CODE in code_inventory(SYNTHETIC_SOURCE["n_codes"])
AF_FORM = surface_forms(AF_CODE)[0]  # "atrial fibrillation"

AF_NOTE = f"""CHIEF COMPLAINT:
Palpitations.

HISTORY OF PRESENT ILLNESS:
68-year-old man with a history of {AF_FORM} who presents for follow-up of palpitations.

PAST MEDICAL HISTORY:
- {AF_FORM}

ASSESSMENT AND PLAN:
1. {AF_FORM.capitalize()}: continue apixaban 5 mg twice daily, rate control with metoprolol.
"""
OTHER_NOTE = """HISTORY OF PRESENT ILLNESS:
54-year-old woman with a history of hypothyroidism and obstructive sleep apnea who presents for a routine visit.

ASSESSMENT AND PLAN:
1. Hypothyroidism: continue levothyroxine 75 mcg daily.
2. Obstructive sleep apnea: continue CPAP nightly.
"""
BUNDLE_FILES = (
    "config.json",
    "labels.json",
    "thresholds.json",
    "calibration.json",
    "metrics.json",
    "README.md",
    "model.safetensors",
    "vocab.json",
)
CODE_KEYS = {"code", "description", "probability", "predicted", "rank"}


def _n_test_notes() -> int:
    """Test-split size of the session's synthetic data, straight from the generator."""
    params = {k: v for k, v in SYNTHETIC_SOURCE.items() if k != "kind"}
    return sum(note.split == "test" for note in generate_notes(SyntheticSource(**params)))


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _codes(prediction: dict) -> dict[str, dict]:
    return {c["code"]: c for c in prediction["codes"]}


def _table_value(table: str, row: str) -> float:
    """The first number of a Markdown metrics-table row such as ``| MAP | 0.918 | 0.918 |``."""
    match = re.search(rf"^\| {re.escape(row)} \| ([0-9.]+) \|", table, flags=re.MULTILINE)
    assert match, f"no {row!r} row in:\n{table}"
    return float(match.group(1))


def _check_prediction_shape(prediction: dict) -> None:
    assert set(prediction) == {"id", "codes"}
    assert prediction["codes"], "a note gets at least one code (its predicted ones)"
    for code in prediction["codes"]:
        assert set(code) == CODE_KEYS
        assert 0.0 <= code["probability"] <= 1.0
        assert isinstance(code["predicted"], bool)
        assert code["description"]  # ICD-10-CM titles for every synthetic code
    ranks = [c["rank"] for c in prediction["codes"]]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    probabilities = [c["probability"] for c in prediction["codes"]]
    assert probabilities == sorted(probabilities, reverse=True)


# ------------------------------------------------------------------- train
def test_train_writes_complete_bundle_and_prints_table(synthetic_run: TrainedRun) -> None:
    result = synthetic_run.result
    assert result.code == 0
    for name in BUNDLE_FILES:
        assert (synthetic_run.bundle / name).is_file(), name
    config = json.loads((synthetic_run.bundle / "config.json").read_text())
    assert config["format"] == "medcoder.bundle.v2" and config["kind"] == "model"
    assert SYNTHETIC_SOURCE.items() <= config["run"]["data"]["source"].items()  # with the generator's other knobs
    labels = json.loads((synthetic_run.bundle / "labels.json").read_text())
    assert len(labels["codes"]) == 20

    test = synthetic_run.metrics["test"]["all_gold"]
    assert test["micro_f1"] > 0.5
    assert test["map"] > 0.5
    assert test["n_docs"] == _n_test_notes() > 30
    # The printed table is the stored test metrics, MAP row included.
    assert f"model written to {synthetic_run.bundle}" in result.out
    assert _table_value(result.out, "MAP") == pytest.approx(test["map"], abs=5e-4)
    assert _table_value(result.out, "micro-F1") == pytest.approx(test["micro_f1"], abs=5e-4)
    assert "Traceback" not in result.err


# ---------------------------------------------------------------- evaluate
def test_evaluate_reproduces_training_metrics_exactly(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = cli("evaluate", synthetic_run.bundle, "--output", out)
    assert result.code == 0, result.err
    evaluated = json.loads(out.read_text())
    stored = synthetic_run.metrics["test"]
    assert evaluated["all_gold"]["map"] == stored["all_gold"]["map"]
    assert evaluated["all_gold"]["micro_f1"] == stored["all_gold"]["micro_f1"]
    assert evaluated == stored
    # Same numbers, same table as printed at training time.
    table_start = synthetic_run.result.out.index("| metric |")
    assert result.out.startswith(synthetic_run.result.out[table_start:])
    # ... followed by macro F1 per train-frequency bin, one row per bin in metrics.json.
    assert "| train docs per code | codes | macro-F1 |" in result.out
    for row in stored["f1_by_frequency"]:
        assert f"| {row['bin']} | {row['n_labels']} |" in result.out


def test_evaluate_on_a_jsonl_file(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    notes = generate_notes(SyntheticSource(n_notes=40, n_codes=20, seed=7))  # unseen notes
    records = [
        {"id": n.id, "text": n.text, "labels": list(n.labels), **({"split": "test"} if i % 4 == 0 else {})}
        for i, n in enumerate(notes)
    ]
    data = write_jsonl(tmp_path / "notes.jsonl", records)

    every = tmp_path / "all.json"
    result = cli("evaluate", synthetic_run.bundle, "--data", data, "--split", "all", "--output", every)
    assert result.code == 0, result.err
    metrics = json.loads(every.read_text())
    assert metrics["all_gold"]["n_docs"] == 40
    assert metrics["all_gold"]["micro_f1"] > 0.5
    assert _table_value(result.out, "MAP") == pytest.approx(metrics["all_gold"]["map"], abs=5e-4)

    test_only = tmp_path / "test.json"
    assert cli("evaluate", synthetic_run.bundle, "--data", data, "--output", test_only).code == 0
    assert json.loads(test_only.read_text())["all_gold"]["n_docs"] == 10


# ----------------------------------------------------------------- predict
def test_predict_text_file_codes_the_mentioned_condition(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    (tmp_path / "af.txt").write_text(AF_NOTE)
    (tmp_path / "other.txt").write_text(OTHER_NOTE)
    result = cli("predict", synthetic_run.bundle, tmp_path / "af.txt", tmp_path / "other.txt")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2
    af, other = _jsonl(result.out)
    for prediction in (af, other):
        _check_prediction_shape(prediction)
    assert af["id"] == "af.txt" and other["id"] == "other.txt"
    assert af["codes"][0]["code"] == AF_CODE and af["codes"][0]["rank"] == 1
    assert _codes(af)[AF_CODE]["predicted"] is True
    assert _codes(af)[AF_CODE]["description"] == "Unspecified atrial fibrillation"
    assert AF_CODE not in {c["code"] for c in other["codes"] if c["predicted"]}
    assert {"E03.9", "G47.33"} <= {c["code"] for c in other["codes"] if c["predicted"]}
    # Without --top-k only predicted codes are listed.
    assert all(c["predicted"] for p in (af, other) for c in p["codes"])


def test_predict_from_stdin_as_text_and_as_jsonl(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    (tmp_path / "af.txt").write_text(AF_NOTE)
    from_file = _jsonl(cli("predict", synthetic_run.bundle, tmp_path / "af.txt").out)[0]

    text = cli("predict", synthetic_run.bundle, stdin=AF_NOTE.encode())
    assert text.code == 0, text.err
    (from_stdin,) = _jsonl(text.out)
    assert from_stdin["id"] == "stdin"
    assert from_stdin["codes"] == from_file["codes"]

    lines = json.dumps({"id": "n1", "text": AF_NOTE}) + "\n\n" + json.dumps({"id": "n2", "text": OTHER_NOTE}) + "\n"
    jsonl = cli("predict", synthetic_run.bundle, "-", "--stdin-format", "jsonl", stdin=lines.encode())
    assert jsonl.code == 0, jsonl.err
    first, second = _jsonl(jsonl.out)
    assert (first["id"], second["id"]) == ("n1", "n2")
    assert first["codes"] == from_file["codes"]
    assert _codes(first)[AF_CODE]["predicted"] and AF_CODE not in _codes(second)


def test_predict_jsonl_file_keeps_ids_and_order(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "batch.jsonl",
        [
            {"note_id": "zeta", "body": OTHER_NOTE},
            {"note_id": 17, "body": AF_NOTE},
            {"body": OTHER_NOTE},
            {"note_id": None, "body": OTHER_NOTE},
        ],
    )
    result = cli("predict", synthetic_run.bundle, data, "--text-field", "body", "--id-field", "note_id")
    assert result.code == 0, result.err
    predictions = _jsonl(result.out)
    assert [p["id"] for p in predictions] == ["zeta", "17", "batch.jsonl:3", "batch.jsonl:4"]
    assert _codes(predictions[1])[AF_CODE]["predicted"]
    assert predictions[0]["codes"] == predictions[2]["codes"]


def test_predict_top_k_lists_best_ranked_codes(cli, synthetic_run: TrainedRun) -> None:
    (plain,) = _jsonl(cli("predict", synthetic_run.bundle, stdin=OTHER_NOTE.encode()).out)
    for k in (5, 12):
        result = cli("predict", synthetic_run.bundle, "--top-k", k, stdin=OTHER_NOTE.encode())
        assert result.code == 0, result.err
        (prediction,) = _jsonl(result.out)
        _check_prediction_shape(prediction)
        assert len(prediction["codes"]) >= k
        assert set(range(1, k + 1)) <= {c["rank"] for c in prediction["codes"]}
        # Shown: the predicted codes (as without --top-k) plus the k best-ranked ones.
        assert {c["code"] for c in prediction["codes"]} == set(_codes(plain)) | {
            c["code"] for c in prediction["codes"] if c["rank"] <= k
        }
        assert [c for c in prediction["codes"] if c["predicted"]] == plain["codes"]
    assert any(not c["predicted"] for c in prediction["codes"])  # 12 of 20 codes shown


def test_predict_output_file(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    (tmp_path / "af.txt").write_text(AF_NOTE)
    printed = cli("predict", synthetic_run.bundle, tmp_path / "af.txt").out
    out = tmp_path / "sub" / "out.jsonl"
    result = cli("predict", synthetic_run.bundle, tmp_path / "af.txt", "-o", out)
    assert result.code == 0, result.err
    assert result.out == ""
    assert out.read_text() == printed
    assert _codes(_jsonl(out.read_text())[0])[AF_CODE]["predicted"]


# ------------------------------------------------------------------ labels
def _label_rows(text: str) -> list[tuple[int, str, int]]:
    rows = re.findall(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+\S", text, flags=re.MULTILINE)
    return [(int(rank), code, int(freq)) for rank, code, freq in rows]


def test_labels_of_bundle_labels_file_and_config(cli, synthetic_run: TrainedRun) -> None:
    of_bundle = cli("labels", synthetic_run.bundle)
    assert of_bundle.code == 0, of_bundle.err
    assert of_bundle.out.startswith("label space: 20 labels (task multilabel, system icd10cm")
    rows = _label_rows(of_bundle.out)
    assert [rank for rank, _, _ in rows] == list(range(1, 21))
    stored = json.loads((synthetic_run.bundle / "labels.json").read_text())
    assert [code for _, code, _ in rows] == stored["codes"]
    assert rows[0][1] == "I10"  # the generator's most common code
    freqs = [freq for _, _, freq in rows]
    assert freqs == sorted(freqs, reverse=True) and freqs[-1] >= 1
    assert "Essential (primary) hypertension" in of_bundle.out

    of_file = cli("labels", synthetic_run.bundle / "labels.json")
    assert of_file.code == 0 and of_file.out == of_bundle.out

    of_config = cli("labels", synthetic_run.config, "--top", "3")
    assert of_config.code == 0, of_config.err
    assert of_config.out.startswith("label space: 20 labels")
    assert _label_rows(of_config.out) == rows[:3]
    coverage = re.search(r"^test: (\d+) notes, (\d+) code assignments; (\d+) codes", of_config.out, flags=re.MULTILINE)
    assert coverage and int(coverage.group(1)) == _n_test_notes()


# -------------------------------------------------------------- experiment
def test_experiment_variants_times_seeds(cli, tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "exp.yaml",
        {
            "name": "regularisation",
            "base": {
                "data": {"source": {"kind": "synthetic", "n_notes": 120, "n_codes": 10, "seed": 3}},
                "labels": {"system": "icd10cm"},
                "model": SMALL_MODEL,
            },
            "variants": [
                {"name": "strong", "overrides": {"model": {"C": 1}}},
                {"name": "weak", "overrides": {"model": {"C": 100}}},
            ],
            "seeds": [0, 1],
        },
    )
    out = tmp_path / "exp"
    result = cli("experiment", config, "-o", out)
    assert result.code == 0, result.err

    results = json.loads((out / "results.json").read_text())
    rows = results["summary"]
    assert [row["variant"] for row in rows] == ["strong", "weak"]
    assert all(row["n_seeds"] == 2 and row["seeds"] == [0, 1] for row in rows)
    assert len(results["runs"]) == 4
    for row in rows:
        runs = [r for r in results["runs"] if r["variant"] == row["variant"]]
        maps = [r["metrics"]["test"]["all_gold"]["map"] for r in runs]
        train_s = [r["timing"]["train"] for r in runs]
        assert row["MAP"]["values"] == maps
        assert row["MAP"]["mean"] == pytest.approx(statistics.fmean(maps), abs=1e-12)
        assert row["train s"]["mean"] == pytest.approx(statistics.fmean(train_s), abs=1e-12)
        assert row["train s"]["sd"] == pytest.approx(statistics.stdev(train_s), abs=1e-12)
        for run in runs:  # every run left a bundle whose metrics are the row's inputs
            bundle = Path(run["bundle_dir"])
            assert bundle == out / row["variant"] / f"seed{run['seed']}"
            assert json.loads((bundle / "metrics.json").read_text()) == {
                "format": "medcoder.metrics.v1",
                **run["metrics"],
            }
            assert json.loads((bundle / "config.json").read_text())["run"]["model"]["C"] == (
                1.0 if row["variant"] == "strong" else 100.0
            )
    # C changes the model: the two variants do not score the same.
    assert rows[0]["MAP"]["mean"] != rows[1]["MAP"]["mean"]

    table = (out / "results.md").read_text()
    assert result.out.startswith(table)
    lines = [line for line in table.splitlines() if line.startswith("| strong |") or line.startswith("| weak |")]
    assert len(lines) == 2
    for line, row in zip(lines, rows, strict=True):
        assert "±" in line
        assert f"| {row['MAP']['mean']:.3f} ± {row['MAP']['sd']:.3f} |" in line

    # The same command again reuses the finished runs; --fresh trains them all again.
    model_file = out / "strong" / "seed0" / "model.safetensors"
    before = model_file.stat().st_mtime_ns
    again = cli("experiment", config, "-o", out)
    assert again.code == 0 and model_file.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["summary"] == rows
    fresh = cli("experiment", config, "-o", out, "--fresh")
    assert fresh.code == 0 and model_file.stat().st_mtime_ns != before


# -------------------------------------------------------------------- demo
def test_demo_trains_evaluates_and_codes_the_example(cli, tmp_path: Path) -> None:
    result = cli("demo", "--n-notes", "60", "--output", tmp_path / "demo")
    assert result.code == 0, result.err
    assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "new_note.txt").is_file()
    metrics = json.loads((tmp_path / "demo" / "model" / "metrics.json").read_text())
    assert _table_value(result.out, "MAP") == pytest.approx(metrics["test"]["all_gold"]["map"], abs=5e-4)
    assert "Codes for" in result.out
    # The example note is about hypertension, type 2 diabetes, hyperlipidemia and heart failure.
    row = r"│\s*(\d+)\s*│\s*([A-Z][0-9][0-9A-Z.]*)\s*│.*│\s*([01]\.\d{3})\s*│\s*(yes)?\s*│"  # rank, code, p, predicted
    coded = re.findall(row, result.out)
    assert len(coded) == 8, result.out
    assert [int(rank) for rank, _, _, _ in coded] == list(range(1, 9))
    predicted = {code for _, code, _, yes in coded if yes}
    assert predicted & {"I10", "E11.9", "E78.5", "I50.9"}, result.out


# ------------------------------------------------------- real subprocesses
def test_entry_point_predicts_in_a_subprocess(synthetic_run: TrainedRun) -> None:
    script = Path(sys.executable).with_name("medcoder")
    proc = subprocess.run(
        [str(script), "predict", str(synthetic_run.bundle), "-", "--top-k", "3"],
        input=AF_NOTE.encode(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    (prediction,) = _jsonl(proc.stdout.decode())
    _check_prediction_shape(prediction)
    assert prediction["codes"][0]["code"] == AF_CODE and prediction["codes"][0]["predicted"]


def test_module_reports_a_user_error_in_a_subprocess(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text(AF_NOTE)
    proc = subprocess.run(
        [sys.executable, "-m", "medcoder.cli", "predict", str(tmp_path / "missing-model"), str(tmp_path / "note.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {tmp_path / 'missing-model'}: not a model directory")


def test_usage_error_exits_2_without_traceback(cli) -> None:
    result = cli("train", "config.yaml")  # -o is required
    assert result.code == 2
    assert "Traceback" not in result.err and "--output" in result.err
