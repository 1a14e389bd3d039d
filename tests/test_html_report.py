"""The HTML report of a bundle or an experiment: its figures checked against numpy, self-containedness, errors.

One tiny TF-IDF model is trained per module on the synthetic notes written to
JSONL, with one code that only test notes carry (a gold code the model cannot
score), so the per-code table's all-gold rows are exercised too.
"""

from __future__ import annotations

import html
import json
import random
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_MODEL, SYNTHETIC_SOURCE, leftovers, write_jsonl

import medcoder
from medcoder.config import DataConfig, ExperimentConfig, RunConfig, validate
from medcoder.data.dataset import load_dataset
from medcoder.errors import MedcoderError
from medcoder.html_report import write_html_report
from medcoder.training.experiment import run_experiment
from medcoder.training.run import train_run

TEST_ONLY_CODE = "Z99.89"  # given to two test notes: no train note carries it


class _Tables(HTMLParser):
    """Every ``<table>``'s body rows as lists of cells ``(data-v or None, text)``, by table id (or position)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str | None, str]]]] = {}
        self._table: str | None = None
        self._in_body = False
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = found.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body:
            self._cell, self._value = [], found.get("data-v")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append((self._value, "".join(self._cell)))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> dict[str, list[list[tuple[str | None, str]]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF-IDF model of the synthetic notes (as JSONL), two test notes also coded TEST_ONLY_CODE."""
    root = tmp_path_factory.mktemp("html_report")
    splits = load_dataset(DataConfig.model_validate({"source": SYNTHETIC_SOURCE}))
    records = [
        {"id": n.id, "text": n.text, "labels": list(n.labels), "split": split}
        for split, notes in splits.items()
        for n in notes
    ]
    assert all(TEST_ONLY_CODE not in r["labels"] for r in records)
    for record in [r for r in records if r["split"] == "test"][:2]:
        record["labels"].append(TEST_ONLY_CODE)
    data = write_jsonl(root / "notes.jsonl", records)
    config = RunConfig.model_validate(
        {
            "data": {"source": {"kind": "jsonl", "path": str(data)}},
            "labels": {"system": "icd10cm"},
            "model": SMALL_MODEL,
        }
    )
    train_run(config, root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def report(bundle: Path) -> str:
    written = write_html_report(bundle)
    assert written == bundle / "report.html" and not leftovers(bundle)
    return written.read_text(encoding="utf-8")


def test_per_code_table_matches_numpy_at_the_tuned_threshold(bundle: Path, report: str) -> None:
    coder = medcoder.load(bundle)
    notes = load_dataset(coder.data_config())["test"]
    probs = coder.predict_proba([n.text for n in notes])
    threshold = json.loads((bundle / "thresholds.json").read_text())["global"]
    codes = list(coder.codes)
    gold_sets = [set(coder.bundle.labels.map_labels(n.labels)) for n in notes]
    space = codes + sorted({c for g in gold_sets for c in g} - set(codes))
    y = np.array([[c in g for c in space] for g in gold_sets])
    pred = np.zeros_like(y)
    pred[:, : len(codes)] = probs >= threshold
    tp, fp, fn = (y & pred).sum(0), (~y & pred).sum(0), (y & ~pred).sum(0)
    expected = {
        code: (int(y[:, j].sum()), int(pred[:, j].sum()), 2 * tp[j] / max(2 * tp[j] + fp[j] + fn[j], 1))
        for j, code in enumerate(space)
        if y[:, j].any() or pred[:, j].any()
    }
    rows = tables_of(report)["codes"]
    shown = {row[0][1]: row for row in rows}
    assert len(rows) == len(shown) == len(expected) and set(shown) == set(expected)
    assert TEST_ONLY_CODE in shown and TEST_ONLY_CODE not in codes
    for code, (support, predicted, f1) in expected.items():
        row = shown[code]
        assert int(row[3][0]) == support and int(row[4][0]) == predicted
        assert float(row[7][0]) == pytest.approx(f1, abs=1e-12)
        assert row[7][1] == f"{f1:.3f}"
    unseen = shown[TEST_ONLY_CODE]
    assert (unseen[2][1], unseen[3][1], unseen[7][1]) == ("0", "2", "0.000")  # 0 train docs, 2 test notes, a miss
    # the table's mean F1 over codes with gold is the reported macro-F1 over labels with gold
    metrics = json.loads((bundle / "metrics.json").read_text())["test"]["all_gold"]
    with_gold = [float(row[7][0]) for row in rows if int(row[3][0]) > 0]
    assert np.mean(with_gold) == pytest.approx(metrics["macro_f1_with_gold"])
    # the headline table shows the figures training wrote into metrics.json
    headline = {row[0][1]: row[1][1] for row in tables_of(report)["table0"]}
    assert headline["MAP"] == f"{metrics['map']:.3f}" and headline["micro-F1"] == f"{metrics['micro_f1']:.3f}"
    assert f"{len(notes)}" in re.search(r"<dt>test notes</dt><dd>([^<]*)</dd>", report).group(1)


def test_report_is_self_contained_with_three_svg_plots(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    assert len(re.findall(r"<svg\b", report)) == 3
    for title in ("F1 by code frequency", "Reliability", "Micro precision-recall"):
        assert f"<h4>{title}</h4>" in report
    assert re.search(r"ECE@20 = \d\.\d{3}", report)  # the reliability plot's text stays text
    external = re.findall(
        r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", report
    )
    assert external == []
    assert "<link" not in report and "<script src" not in report and "<!DOCTYPE svg" not in report
    # the sorting header cells are buttons (keyboard-usable), sorted by test support at first
    assert report.count('<th data-type="num"') == 6 and '<th data-type="num" aria-sort="descending"><button' in report


def test_output_elsewhere_and_errors_name_the_folder(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "page.html"
    assert write_html_report(bundle, target) == target and target.read_text().endswith("</html>\n")

    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(MedcoderError, match=re.escape(str(empty)) + ".*no config.json.*no results.json"):
        write_html_report(empty)

    moved = shutil.copytree(bundle, tmp_path / "moved", ignore=shutil.ignore_patterns("report.html"))
    header = json.loads((moved / "config.json").read_text())
    header["run"]["data"]["source"]["path"] = str(tmp_path / "gone.jsonl")
    (moved / "config.json").write_text(json.dumps(header))
    with pytest.raises(MedcoderError, match=re.escape(str(moved)) + ": cannot read the test split"):
        write_html_report(moved)
    assert not (moved / "report.html").exists()


def test_multiclass_model_gets_a_report_without_pr_curve(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = {"cardio": "angina murmur stent troponin".split(), "neuro": "seizure tremor aphasia migraine".split()}
    records = [
        {"id": f"{label}{i}", "text": " ".join(rng.sample(ws, 2) + ["seen", "today"]), "labels": label, "split": split}
        for label, ws in words.items()
        for i, split in enumerate(["train"] * 20 + ["dev"] * 6 + ["test"] * 6)
    ]
    data = write_jsonl(tmp_path / "notes.jsonl", records)
    config = RunConfig.model_validate(
        {"task": {"type": "multiclass"}, "data": {"source": {"kind": "jsonl", "path": str(data)}}, "model": SMALL_MODEL}
    )
    result = train_run(config, tmp_path / "model")
    page = write_html_report(tmp_path / "model").read_text()
    headline = {row[0][1]: row[1][1] for row in tables_of(page)["table0"]}
    assert headline["accuracy"] == f"{result.metrics['test']['accuracy']:.3f}"
    rows = {row[0][1]: row for row in tables_of(page)["codes"]}
    assert set(rows) == {"cardio", "neuro"} and all(row[3][1] == "6" for row in rows.values())
    assert len(re.findall(r"<svg\b", page)) == 2 and "Micro precision-recall" not in page


def test_experiment_report_names_the_best_dev_variant(tmp_path: Path) -> None:
    config = validate(
        ExperimentConfig,
        {
            "name": "C <sweep> & co",
            "base": {"data": {"source": {"kind": "synthetic", "n_notes": 80, "n_codes": 6}}, "model": SMALL_MODEL},
            "variants": [{"name": "weak", "overrides": {"model": {"C": 0.01}}}, {"name": "strong", "overrides": {}}],
        },
        source="test",
    )
    rows = run_experiment(config, tmp_path)
    page = write_html_report(tmp_path).read_text()
    assert "<title>medcoder experiment report: C &lt;sweep&gt; &amp; co</title>" in page and "<sweep>" not in page
    best = max(rows, key=lambda r: r["dev MAP"]["mean"])
    assert f"Variant {html.escape(repr(best['variant']))} has the best dev MAP ({best['dev MAP']['mean']:.3f}" in page
    assert f"<h2>Model: {best['variant']}, seed 0</h2>" in page
    variants = tables_of(page)["table0"]
    assert [r[0][1] for r in variants] == ["weak", "strong"]
    assert [r[2][1] for r in variants] == [f"{r['dev MAP']['mean']:.3f} ± 0.000" for r in rows]  # as in results.md
    assert [r[3][1] for r in variants] == [f"{r['MAP']['mean']:.3f} ± 0.000" for r in rows]
    series = re.search(r"<h4>F1 by code frequency, per variant</h4>(.*?)</svg>", page, re.S).group(1)
    assert ">weak<" in series and ">strong<" in series
    assert len(re.findall(r"<svg\b", page)) == 4 and "codes" in tables_of(page)
