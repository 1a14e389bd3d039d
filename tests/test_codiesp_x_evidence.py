"""bench/codiesp_x_evidence.py on a tiny synthetic CodiEsp-X file: overlaps, reading, figures, errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from medcoder.errors import InputError, MedcoderError
from medcoder.inference.records import CodeScore, Evidence, NotePrediction

_PATH = Path(__file__).resolve().parents[1] / "bench" / "codiesp_x_evidence.py"
_SPEC = importlib.util.spec_from_file_location("codiesp_x_evidence", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench  # dataclasses look their module up while the class is built
_SPEC.loader.exec_module(bench)

NOTES = {
    "n1": "Varón con fiebre y dolor costal. Refiere fiebre alta.",
    "n2": "Mujer con quistes renales y cefalea.",
}


def _row(note: str, kind: str, code: str, offsets: str) -> str:
    text = NOTES[note]
    fragments = bench.parse_offsets(offsets)
    return "\t".join([note, kind, code, " ".join(text[s:e] for s, e in fragments), offsets])


def _x_file(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "testX.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_overlaps_counts_shared_characters_only() -> None:
    assert bench.overlaps((0, 5), [(3, 8)])
    assert not bench.overlaps((0, 3), [(3, 8)])  # touching is not overlapping
    assert not bench.overlaps((8, 10), [(3, 8)])
    assert bench.overlaps((4, 5), [(0, 2), (3, 8)])  # inside the second fragment
    assert bench.overlaps((0, 10), [(3, 8)])  # covering it
    assert not bench.overlaps((0, 5), [])
    assert not bench.overlaps((3, 3), [(0, 8)])  # an empty span has no character
    assert not bench.overlaps((0, 8), [(3, 3)])  # nor an empty gold fragment


def test_parse_offsets() -> None:
    assert bench.parse_offsets("182 190") == [(182, 190)]
    assert bench.parse_offsets("1847 1856;1943 1949") == [(1847, 1856), (1943, 1949)]
    for bad in ("182", "a b", "190 182", "1 2;3"):
        with pytest.raises(ValueError):
            bench.parse_offsets(bad)


def test_read_x_spans_maps_codes_and_skips_bad_rows(tmp_path: Path) -> None:
    rows = [
        _row("n1", "DIAGNOSTICO", "r50.9", "10 16"),  # "fiebre"
        _row("n1", "DIAGNOSTICO", "r50.9", "41 47"),  # the second "fiebre"
        _row("n1", "DIAGNOSTICO", "s22.49xa", "19 24;25 31"),  # discontinuous "dolor costal"
        _row("n2", "PROCEDIMIENTO", "bv49zzz", "10 17"),  # the other type: not read
        "n2\tDIAGNOSTICO\tn28.1\tquistes",  # 4 fields
        "n2\tDIAGNOSTICO\tn28.1\tquistes\t10 x",  # bad offsets
        "n3\tDIAGNOSTICO\tr51\tcefalea\t0 7",  # a note outside the split
        "n2\tDIAGNOSTICO\tr51\tcefalea\t28 90",  # past the note's end
        "n2\tDIAGNOSTICO\tr51\tcefalea.\t28 35",  # text differs at the offsets: kept, counted
    ]
    gold = bench.read_x_spans(_x_file(tmp_path, rows), NOTES, map_code=str.upper)
    assert gold.spans[("n1", "R50.9")] == [(10, 16), (41, 47)]
    assert gold.spans[("n1", "S22.49XA")] == [(19, 24), (25, 31)]
    assert gold.spans[("n2", "R51")] == [(28, 35)]
    assert (gold.rows, gold.kept, gold.other_kind, gold.skipped) == (9, 4, 1, 4)
    assert (gold.unknown_note, gold.text_mismatch) == (1, 1)
    assert len(gold.warnings) == 4
    assert all(w.startswith(f"{tmp_path / 'testX.tsv'}:") for w in gold.warnings)
    assert ":5: expected 5 tab-separated fields" in gold.warnings[0]


def test_read_x_spans_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        bench.read_x_spans(tmp_path / "missing.tsv", NOTES)
    wrong_language = ["n1\tDIAGNOSTICO\tr50.9\tfever\t10 16", "n2\tDIAGNOSTICO\tr51\theadache\t28 35"]
    with pytest.raises(MedcoderError, match="do not match the notes' text"):
        bench.read_x_spans(_x_file(tmp_path, wrong_language), NOTES)
    with pytest.raises(MedcoderError, match="no usable DIAGNOSTICO row"):
        bench.read_x_spans(_x_file(tmp_path, ["garbage"]), NOTES)


def _code(code: str, predicted: bool, *spans: tuple[int, int, str]) -> CodeScore:
    evidence = [Evidence(s, e, NOTES["n1"][s:e], 1.0, source) for s, e, source in spans]
    return CodeScore(code, None, 0.9, predicted, 1, evidence)


def test_measure_first_and_any_span(tmp_path: Path) -> None:
    rows = [
        _row("n1", "DIAGNOSTICO", "r50.9", "41 47"),  # gold at the second "fiebre" only
        _row("n1", "DIAGNOSTICO", "s22.49xa", "19 24;25 31"),
        _row("n1", "DIAGNOSTICO", "r52", "19 24"),
    ]
    gold = bench.read_x_spans(_x_file(tmp_path, rows), NOTES)
    prediction = NotePrediction(
        "n1",
        [
            # first span on the first "fiebre" (off gold, same words), the second span on gold
            _code("R50.9", True, (10, 16, "tfidf"), (41, 47, "svm")),
            _code("S22.49XA", True, (25, 31, "tfidf")),  # first span on the second fragment
            _code("R52", True),  # no evidence
            _code("I10", True, (0, 5, "tfidf")),  # predicted, not gold
            _code("R69", False, (0, 5, "tfidf")),  # listed, not predicted
            _code("R11.10", True, (0, 5, "tfidf")),  # gold, no X span
        ],
    )
    figures = bench.measure([prediction], ["n1"], [["R50.9", "S22.49XA", "R52", "R11.10", "R69"]], gold)
    assert (figures.notes, figures.predicted, figures.correct, figures.with_x) == (1, 5, 4, 3)
    assert (figures.first_on_gold, figures.any_on_gold, figures.no_evidence) == (1, 2, 1)
    assert figures.first_same_words == 1
    assert figures.by_source == {"tfidf": [2, 1], "svm": [1, 1]}
    table = bench.render(figures, gold, system="es@abc", split="test", threshold="0.5000")
    assert "| first span on a gold span | 0.3333 (1/3) |" in table
    assert "| any shown span on a gold span | 0.6667 (2/3) |" in table
    assert "| first span of source `svm` on a gold span | 1.0000 (1/1) |" in table


def test_main_reports_a_missing_bundle_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main([str(tmp_path / "no-bundle")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
