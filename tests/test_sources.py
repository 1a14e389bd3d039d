"""Tests for the source readers: JSONL, CSV, MIMIC-III, MIMIC-IV, CodiEsp."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import shutil
from pathlib import Path

import pytest

from medcoder.config import DataConfig, validate
from medcoder.data import mimic
from medcoder.data.records import Note, Span
from medcoder.data.sources.codiesp import read_codiesp_spans
from medcoder.errors import ConfigError, InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
CODIESP_TSVS = SHARED / "data" / "codiesp" / "original"


def load_notes(kind: str, location: Path, **options: object) -> list[Note]:
    """The notes of source ``kind``, its section validated as a config file's ``data.source`` is."""
    key = "path" if kind in ("jsonl", "csv") else "root"
    raw = {"source": {"kind": kind, key: str(location), **options}}
    return validate(DataConfig, raw, source="data.yaml").source.read()


def read_jsonl(path: Path, **options: object) -> list[Note]:
    return load_notes("jsonl", path, **options)


def read_csv(path: Path, **options: object) -> list[Note]:
    return load_notes("csv", path, **options)


def read_mimic3(root: Path, **options: object) -> list[Note]:
    return load_notes("mimic3", root, **options)


def read_mimic4(root: Path, **options: object) -> list[Note]:
    return load_notes("mimic4", root, **options)


def read_codiesp(root: Path, **options: object) -> list[Note]:
    return load_notes("codiesp", root, **options)


def write_jsonl(path: Path, lines: list[object]) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def assert_message(info: pytest.ExceptionInfo[InputError], *parts: str) -> None:
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- JSONL -----------------------------------------------------------------


def test_jsonl_reads_labels_splits_and_meta(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "notes.jsonl",
        [
            {"id": "a", "text": "Chest pain.", "labels": [" I20.9", "I20.9", "R07.4 "], "split": "train", "age": 64},
            "",
            {"id": 7, "text": "Cough.", "labels": "R05", "split": "background"},
            {"id": "c", "text": "Fever.", "labels": ["R50.9"], "split": "Validation"},
        ],
    )
    notes = read_jsonl(path)
    assert [note.id for note in notes] == ["a", "7", "c"]
    assert notes[0].labels == ("I20.9", "R07.4")
    assert notes[0].meta == {"age": 64}
    assert notes[1].labels == ("R05",)
    assert (notes[1].split, notes[1].meta) == (None, {"split": "background"})
    assert notes[2].split == "dev"
    assert notes[0].text_pair is None


def test_jsonl_custom_fields_and_text_pair(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "nli.jsonl",
        [{"pid": "p1", "premise": "He has a fever.", "hyp": "He is febrile.", "gold": "entailment"}],
    )
    (note,) = read_jsonl(path, id_field="pid", text_field="premise", labels_field="gold", text_pair_field="hyp")
    assert (note.id, note.text, note.text_pair, note.labels, note.meta) == (
        "p1",
        "He has a fever.",
        "He is febrile.",
        ("entailment",),
        {},
    )
    with pytest.raises(InputError) as info:
        read_jsonl(path, id_field="pid", text_field="premise", labels_field="gold", text_pair_field="hypothesis")
    assert_message(info, f"{path}:1", "'p1'", "'hypothesis'", "missing field")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "b", "text": "x", "labels": ["A"]', ["malformed JSON"]),
        ('["b", "x"]', ["expected a JSON object, found array"]),
        ('{"text": "x", "labels": ["A"]}', ["field 'id'", "missing field"]),
        ('{"id": "b", "labels": ["A"]}', ["record 'b'", "field 'text'", "missing field"]),
        ('{"id": "b", "text": 5, "labels": ["A"]}', ["record 'b'", "field 'text'", "expected a string, found number"]),
        ('{"id": "b", "text": "x", "labels": {"A": 1}}', ["record 'b'", "field 'labels'", "found object"]),
        ('{"id": "b", "text": "x", "labels": ["A", 3]}', ["field 'labels'", "found number at position 1"]),
        ('{"id": "b", "text": "", "labels": ["A"]}', ["record 'b'", "field 'text'", "empty"]),
        ('{"id": "b", "text": " \\n\\t ", "labels": ["A"]}', ["record 'b'", "field 'text'", "whitespace"]),
        ('{"id": "b", "text": "x", "labels": []}', ["record 'b'", "field 'labels'", "empty label set"]),
        ('{"id": "b", "text": "x"}', ["record 'b'", "field 'labels'", "empty label set"]),
        ('{"id": "b", "text": "x", "labels": ["A"], "split": 1}', ["field 'split'", "expected a string"]),
        ('{"id": "a", "text": "again", "labels": ["A"]}', ["record 'a'", "duplicate note id (first seen on line 1)"]),
    ],
)
def test_jsonl_bad_records_name_file_line_record_and_field(tmp_path: Path, line: str, expected: list[str]) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "ok", "labels": ["A"]}, "", line])
    with pytest.raises(InputError) as info:
        read_jsonl(path)
    assert_message(info, f"{path}:3", *expected)


def test_jsonl_allows_empty_labels_when_asked(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "x"}, {"id": "b", "text": "y", "labels": []}]
    path = write_jsonl(tmp_path / "unlabelled.jsonl", records)
    assert [note.labels for note in read_jsonl(path, allow_empty_labels=True)] == [(), ()]


def test_jsonl_non_utf8_empty_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok", "labels": ["A"]}\n{"id": "b", "text": "caf\xe9", "labels": ["A"]}\n')
    with pytest.raises(InputError) as info:
        read_jsonl(path)
    assert_message(info, f"{path}:2", "not valid UTF-8", "0xe9")
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(InputError, match="no notes found"):
        read_jsonl(empty)
    with pytest.raises(InputError) as info:
        read_jsonl(tmp_path / "absent.jsonl")
    assert_message(info, "absent.jsonl", "file not found")


def test_jsonl_is_streamed_by_newline_with_offsets_bom_and_crlf(tmp_path: Path) -> None:
    # U+2028 / U+0085 are legal unescaped inside a JSON string: a line ends at "\n" only (str.splitlines broke them)
    path = tmp_path / "notes.jsonl"
    first = json.dumps({"id": "a", "text": "line\u2028sep \u0085 next", "labels": ["A"]}, ensure_ascii=False)
    second = '{"id": "b", "text": "ok", "labels": ["B"]}'
    path.write_bytes(b"\xef\xbb\xbf" + first.encode() + b"\r\n" + second.encode())  # BOM, CRLF, no final newline
    notes = read_jsonl(path)
    assert [(n.id, n.text, n.labels) for n in notes] == [
        ("a", "line\u2028sep \u0085 next", ("A",)),
        ("b", "ok", ("B",)),
    ]
    bad = tmp_path / "bad.jsonl"
    head = b'{"id": "a", "text": "ok", "labels": ["A"]}\n'
    bad.write_bytes(head + b'{"id": "b", "text": "\xff"}\n')
    with pytest.raises(InputError) as info:
        read_jsonl(bad)
    assert_message(info, f"{bad}:2", f"0xff at offset {len(head) + 21}")


# --- CSV -------------------------------------------------------------------


def test_csv_reads_quoted_multiline_fields_and_meta(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "notes.csv",
        ["id", "text", "labels", "part", "ward"],
        [["n1", "Line one,\nline two.", "I10; E11.9;I10", "test", "cardio"], ["n2", "Short.", "R05", "", "resp"]],
    )
    notes = read_csv(path, split_column="part")
    assert notes[0].text == "Line one,\nline two."
    assert notes[0].labels == ("I10", "E11.9")
    assert (notes[0].split, notes[0].meta) == ("test", {"ward": "cardio"})
    assert (notes[1].split, notes[1].meta) == (None, {"ward": "resp"})


def test_csv_error_lines_are_where_the_row_starts(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "notes.csv", ["id", "text", "labels"], [["n1", "one\ntwo\nthree", "A"], ["n2", "  ", "B"]]
    )
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:5", "record 'n2'", "field 'text'", "empty or whitespace")
    rows = [["n1", "a", "A"], ["n2", "b", "B"], ["n1", "c", "C"]]
    path = write_csv(tmp_path / "dup.csv", ["id", "text", "labels"], rows)
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:4", "record 'n1'", "duplicate note id (first seen on line 2)")
    path = write_csv(tmp_path / "nolabel.csv", ["id", "text", "labels"], [["n1", "a", " ; "]])
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:2", "record 'n1'", "field 'labels'", "empty label set")


def test_csv_missing_column_names_column_and_columns_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "notes.csv", ["id", "body", "labels"], [["n1", "x", "A"]])
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:1", "field 'text'", "missing column", "columns found: id, body, labels")
    assert read_csv(path, text_column="body")[0].text == "x"


def test_csv_wrong_field_count_tab_delimiter_and_huge_fields(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("id,text,labels\nn1,x,A\nn2,y\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:3", "expected 3 fields, found 2")
    path.write_text('id,text,labels\nn1,x,A\nn2,"unclosed,B\nn3,z,C\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_csv(path)
    assert_message(info, f"{path}:3", "malformed CSV", "unexpected end of data")
    big = "word " * 60_000  # larger than the csv module's default 128 KiB field limit
    path = tmp_path / "notes.tsv"
    path.write_text(f"id\ttext\tcodes\nn1\t{big}\tA|B\n", encoding="utf-8")
    (note,) = read_csv(path, delimiter="\t", labels_column="codes", label_separator="|")
    assert (len(note.text), note.labels) == (len(big), ("A", "B"))


# --- MIMIC-III -------------------------------------------------------------

NOTE_HEADER = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "CATEGORY",
    "DESCRIPTION",
    "CGID",
    "ISERROR",
    "TEXT",
]
CODE_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]


def note_row(
    row_id: int, subject: int, hadm: object, date: str, category: str, description: str, error: str, text: str
) -> list[object]:
    return [row_id, subject, hadm, date, "", "", category, description, "", error, text]


def write_mimic3(root: Path, *, gzip_notes: bool = False) -> Path:
    ds = "Discharge summary"
    notes = [
        note_row(11, 10, 100, "2150-01-02", ds, "Addendum", "", "Addendum: potassium repleted.\n"),
        note_row(12, 10, 100, "2150-01-01", ds, "Report", "", "Admission Date: [**2150-1-1**]\nChest pain.\n"),
        note_row(13, 10, 100, "2150-01-01", "Nursing/other", "Report", "", "Nursing note."),
        note_row(14, 20, 200, "2151-03-03", ds, "Report", "1", "Written for the wrong patient."),
        note_row(15, 20, "200.0", "2151-03-03", ds, "Report", "", "Sepsis, treated."),
        note_row(16, 30, 300, "2152-04-04", ds, "Report", "", "No codes were recorded."),
        note_row(17, 40, 400, "2153-05-05", ds, "Report", "1", "Only an erroneous summary."),
    ]
    write_csv(root / ("NOTEEVENTS.csv.gz" if gzip_notes else "NOTEEVENTS.csv"), NOTE_HEADER, notes)
    diagnoses = [
        [1, 10, 100, 1, "4019"],
        [2, 10, 100, 2, "E8889"],
        [3, 10, 100, 3, "4019"],
        [4, 20, 200, 1, "V1000"],
        [5, 40, 400, 1, "4280"],
        [6, 20, 200, 2, ""],
    ]
    write_csv(root / "DIAGNOSES_ICD.csv", CODE_HEADER, diagnoses)
    write_csv(root / "PROCEDURES_ICD.csv", CODE_HEADER, [[1, 10, 100, 1, "3961"], [2, 20, 200, 1, "4019"]])
    return root


@pytest.mark.parametrize("chunk_rows", [100_000, 2])
def test_mimic3_joins_report_and_addendum_and_dots_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    monkeypatch.setattr(mimic, "CHUNK_ROWS", chunk_rows)  # also across chunk boundaries
    notes = read_mimic3(write_mimic3(tmp_path))
    assert [note.id for note in notes] == ["100", "200"]  # 300 has no code, 400 only an ISERROR note
    first, second = notes
    assert first.text == "Admission Date: [**2150-1-1**]\nChest pain.\n\nAddendum: potassium repleted."
    assert first.labels == ("401.9", "E888.9", "39.61")
    assert first.meta == {"subject_id": "10", "note_row_ids": ["12", "11"], "procedure_codes": ["39.61"]}
    assert second.text == "Sepsis, treated."  # the ISERROR=1 row 14 is skipped
    # Diagnosis 4019 and procedure 4019 stay apart once dotted.
    assert second.labels == ("V10.00", "40.19")
    assert second.meta["procedure_codes"] == ["40.19"]


def test_mimic3_logs_what_it_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="medcoder"):
        read_mimic3(write_mimic3(tmp_path))
    assert "skipped 2 discharge summaries with ISERROR=1" in caplog.text
    assert "dropped 1 admissions with a discharge summary but no code" in caplog.text  # 300
    assert "dropped 1 coded admissions without a discharge summary" in caplog.text  # 400


def test_mimic3_without_procedures_needs_no_procedure_table(tmp_path: Path) -> None:
    root = write_mimic3(tmp_path, gzip_notes=True)
    (root / "PROCEDURES_ICD.csv").unlink()
    notes = read_mimic3(root, include_procedures=False)
    assert [(note.id, note.labels) for note in notes] == [("100", ("401.9", "E888.9")), ("200", ("V10.00",))]
    with pytest.raises(InputError) as info:
        read_mimic3(root)
    assert_message(info, "PROCEDURES_ICD.csv", "file not found")


def test_mimic3_top_k_keeps_most_frequent_codes_of_diagnoses_and_procedures(tmp_path: Path) -> None:
    # Code k is in admissions 1..60-k, so its frequency is 60-k; code 0 is a procedure.
    codes = ["3961"] + [f"{100 + k}9" for k in range(1, 60)]
    notes, diagnoses, procedures = [], [], []
    for hadm in range(1, 62):
        notes.append(note_row(hadm, hadm, hadm, "2150-01-01", "Discharge summary", "Report", "", f"Note {hadm}."))
        for k in range(60 if hadm <= 60 else 0):
            if hadm <= 60 - k:
                (procedures if k == 0 else diagnoses).append([len(diagnoses), hadm, hadm, k, codes[k]])
    diagnoses.append([len(diagnoses), 61, 61, 1, "9999"])  # admission 61 has only a singleton code
    write_csv(tmp_path / "NOTEEVENTS.csv", NOTE_HEADER, notes)
    write_csv(tmp_path / "DIAGNOSES_ICD.csv", CODE_HEADER, diagnoses)
    write_csv(tmp_path / "PROCEDURES_ICD.csv", CODE_HEADER, procedures)

    full = read_mimic3(tmp_path)
    assert len(full) == 61 and len({code for note in full for code in note.labels}) == 61
    top = read_mimic3(tmp_path, label_set="50")
    assert [note.id for note in top] == [str(hadm) for hadm in range(1, 61)]
    kept = {code for note in top for code in note.labels}
    assert kept == {"39.61"} | {f"{100 + k}.9" for k in range(1, 50)}
    assert top[0].meta["procedure_codes"] == ["39.61"]
    small = read_mimic3(tmp_path, label_set="50", top_k=3)
    assert {code for note in small for code in note.labels} == {"39.61", "101.9", "102.9"}
    assert len(small) == 60


def test_mimic3_split_files_set_splits_and_drop_unlisted(tmp_path: Path) -> None:
    root = write_mimic3(tmp_path / "mimic")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train_full_hadm_ids.csv").write_text("100\n", encoding="utf-8")
    (splits / "dev_full_hadm_ids.csv").write_text("", encoding="utf-8")
    (splits / "test_full_hadm_ids.csv").write_text("999\n", encoding="utf-8")
    assert [(note.id, note.split) for note in read_mimic3(root, splits_dir=splits)] == [("100", "train")]
    (splits / "test_full_hadm_ids.csv").write_text("200\n100\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_mimic3(root, splits_dir=splits)
    assert_message(info, "test_full_hadm_ids.csv:2", "record '100'", "also listed in the train split")
    with pytest.raises(InputError) as info:
        read_mimic3(root, label_set="50", splits_dir=splits)
    assert_message(info, "train_50_hadm_ids.csv", "file not found")


def test_mimic3_missing_column_names_file_and_column(tmp_path: Path) -> None:
    root = write_mimic3(tmp_path)
    header = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "CODE"]
    write_csv(root / "DIAGNOSES_ICD.csv", header, [[1, 10, 100, 1, "4019"]])
    with pytest.raises(InputError) as info:
        read_mimic3(root)
    assert_message(info, "DIAGNOSES_ICD.csv:1", "field 'ICD9_CODE'", "missing column", "columns found")
    with pytest.raises(ConfigError, match="data.yaml: source.label_set"):
        read_mimic3(root, label_set="top50")


# --- MIMIC-IV --------------------------------------------------------------


def write_mimic4(root: Path, note_root: Path) -> None:
    discharge = [
        ["10-DS-2", 10, 1000, "DS", 2, "", "", "Second part."],
        ["10-DS-1", 10, 1000, "DS", 1, "", "", "First part.\n"],
        ["20-DS-1", 20, 2000, "DS", 1, "", "", "An ICD-9 admission."],
        ["30-DS-1", 30, 3000, "DS", 1, "", "", "A mixed admission."],
    ]
    header = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
    write_csv(note_root / "note" / "discharge.csv", header, discharge)
    diagnoses = [
        [10, 1000, 1, "I5020", 10],
        [20, 2000, 1, "4019", 9],
        [20, 2000, 2, "E8889", 9],
        [30, 3000, 1, "E119", 10],
        [30, 3000, 2, "V1000", 9],
        [40, 4000, 1, "I10", 10],
    ]
    write_csv(
        root / "hosp" / "diagnoses_icd.csv", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], diagnoses
    )
    procedures = [[10, 1000, 1, "2180-01-01", "02HV33Z", 10], [20, 2000, 1, "2180-01-01", "3961", 9]]
    write_csv(
        root / "hosp" / "procedures_icd.csv",
        ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
        procedures,
    )


def test_mimic4_dots_by_version_and_joins_in_note_seq_order(tmp_path: Path) -> None:
    write_mimic4(tmp_path, tmp_path)
    notes = read_mimic4(tmp_path)
    assert [note.id for note in notes] == ["1000", "2000", "3000"]
    assert notes[0].text == "First part.\n\nSecond part."
    assert notes[0].labels == ("I50.20", "02HV33Z")
    assert notes[0].meta["icd_versions"] == {"I50.20": 10, "02HV33Z": 10}
    assert notes[0].meta["note_ids"] == ["10-DS-1", "10-DS-2"]
    assert notes[1].labels == ("401.9", "E888.9", "39.61")
    assert notes[1].meta["procedure_codes"] == ["39.61"]
    assert notes[2].labels == ("E11.9", "V10.00")


def test_mimic4_icd_version_filter_and_separate_note_root(tmp_path: Path) -> None:
    write_mimic4(tmp_path / "mimic-iv", tmp_path / "mimic-iv-note")
    icd10 = read_mimic4(tmp_path / "mimic-iv", note_root=tmp_path / "mimic-iv-note", icd_version=10)
    assert [(note.id, note.labels) for note in icd10] == [("1000", ("I50.20", "02HV33Z")), ("3000", ("E11.9",))]
    icd9 = load_notes("mimic4", tmp_path / "mimic-iv", note_root=tmp_path / "mimic-iv-note" / "note", icd_version=9)
    assert [(note.id, note.labels) for note in icd9] == [("2000", ("401.9", "E888.9", "39.61")), ("3000", ("V10.00",))]
    with pytest.raises(InputError) as info:
        read_mimic4(tmp_path / "mimic-iv")
    assert_message(info, "discharge.csv", "file not found")


def test_mimic4_bad_icd_version_names_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mimic, "CHUNK_ROWS", 1)  # line numbers must survive chunking
    write_mimic4(tmp_path, tmp_path)
    path = write_csv(
        tmp_path / "hosp" / "diagnoses_icd.csv",
        ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
        [[10, 1000, 1, "I5020", 10], [10, 1000, 2, "I10", "ICD10"]],
    )
    with pytest.raises(InputError) as info:
        read_mimic4(tmp_path)
    assert_message(info, f"{path}:3", "record '1000'", "field 'icd_version'", "'ICD10'")


# --- CodiEsp ---------------------------------------------------------------


def write_codiesp(root: Path, documents: dict[str, dict[str, str]], tsv_rows: dict[str, str]) -> Path:
    """``documents``: split -> {article id: text}; ``tsv_rows``: file name -> TSV content."""
    for split, texts in documents.items():
        for folder in ("text_files", "text_files_en"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for article, text in texts.items():
                (root / split / folder / f"{article}.txt").write_text(f"[{folder}] {text}", encoding="utf-8")
    for name, content in tsv_rows.items():
        split = name[:-5]
        (root / split / name).write_text(content, encoding="utf-8")
    return root


def small_codiesp(root: Path) -> Path:
    return write_codiesp(
        root,
        {"train": {"S1": "Varón con orquitis.", "S2": "Mujer con fiebre."}, "dev": {"S3": "Dolor torácico."}},
        {
            "trainD.tsv": "S1\tn44.8\nS1\tz20.818\nS2\tr50.9\nS1\tn44.8\n",
            "trainP.tsv": "S1\tbw03zzz\n",
            "devD.tsv": "S3\tr07.9\n",
            "devP.tsv": "",
            "devX.tsv": "S3\tDIAGNOSTICO\tr07.9\tdolor torácico\t0 5;6 14\n"
            "S3\tPROCEDIMIENTO\tbw03zzz\trx\t20 20;20 22\n",
        },
    )


def test_codiesp_reads_splits_codes_and_languages(tmp_path: Path) -> None:
    root = small_codiesp(tmp_path)
    notes = read_codiesp(root)
    assert [(n.id, n.split, n.labels) for n in notes] == [
        ("S1", "train", ("N44.8", "Z20.818")),
        ("S2", "train", ("R50.9",)),
        ("S3", "dev", ("R07.9",)),
    ]
    assert notes[0].text == "[text_files_en] Varón con orquitis."
    assert read_codiesp(root, language="es")[0].text == "[text_files] Varón con orquitis."
    procedures = load_notes("codiesp", root, subtask="P")
    assert [(n.id, n.labels) for n in procedures] == [("S1", ("BW03ZZZ",)), ("S2", ()), ("S3", ())]


def test_codiesp_document_without_diagnosis_is_an_error(tmp_path: Path) -> None:
    root = small_codiesp(tmp_path)
    (root / "train" / "trainD.tsv").write_text("S1\tn44.8\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_codiesp(root)
    assert_message(info, "S2.txt", "record 'S2'", "field 'labels'", "trainD.tsv")


def test_codiesp_code_without_text_names_tsv_line_and_id(tmp_path: Path) -> None:
    root = small_codiesp(tmp_path)
    (root / "train" / "trainD.tsv").write_text("S1\tn44.8\nS2\tr50.9\nS9\tr52\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_codiesp(root)
    assert_message(info, f"{root / 'train' / 'trainD.tsv'}:3", "record 'S9'", "no text file")
    (root / "train" / "trainD.tsv").write_text("S1\tn44.8\tX\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"trainD\.tsv:1: expected 2 non-empty tab-separated fields"):
        read_codiesp(root)
    (root / "train" / "trainD.tsv").unlink()
    with pytest.raises(InputError, match=r"trainD\.tsv: file not found"):
        read_codiesp(root)


def test_codiesp_spans_take_each_piece_of_discontinuous_mentions(tmp_path: Path) -> None:
    spans = read_codiesp_spans(small_codiesp(tmp_path), "dev")
    # "20 20" is an empty piece, as in the real release, and is skipped.
    assert spans == {"S3": [Span(0, 5, "R07.9"), Span(6, 14, "R07.9"), Span(20, 22, "BW03ZZZ")]}
    (tmp_path / "dev" / "devX.tsv").write_text("S3\tDIAGNOSTICO\tr07.9\tdolor\t5 0\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_codiesp_spans(tmp_path, "dev")
    assert_message(info, "devX.tsv:1", "record 'S3'", "field 'reference-position'", "'5 0'")


@pytest.mark.skipif(not CODIESP_TSVS.is_dir(), reason="the shared CodiEsp copy is not available")
def test_codiesp_real_tsvs(tmp_path: Path) -> None:
    # The shared copy has TSVs only: pair them with placeholder texts in tmp_path.
    for split in ("train", "dev", "test"):
        (tmp_path / split / "text_files_en").mkdir(parents=True)
        for kind in "DPX":
            shutil.copy(CODIESP_TSVS / split / f"{split}{kind}.tsv", tmp_path / split)
        ids = {line.split("\t")[0] for line in (tmp_path / split / f"{split}D.tsv").read_text("utf-8").splitlines()}
        for article in ids:
            (tmp_path / split / "text_files_en" / f"{article}.txt").write_text("placeholder", encoding="utf-8")
    diagnoses = read_codiesp(tmp_path)
    assert [sum(n.split == split for n in diagnoses) for split in ("train", "dev", "test")] == [500, 250, 250]
    assert sum(len(n.labels) for n in diagnoses if n.split == "train") == 5639
    assert all(code == code.upper() for n in diagnoses for code in n.labels)
    procedures = read_codiesp(tmp_path, subtask="P")
    assert sum(bool(n.labels) for n in procedures) == 435 + 222 + 224
    spans = read_codiesp_spans(tmp_path, "dev")
    assert len(spans) == 250 and Span(307, 316, "BT41ZZZ") in spans["S0004-06142005000900016-1"]


# --- Dispatcher ------------------------------------------------------------


def test_sources_are_chosen_by_kind_and_reject_unknown_kinds_and_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "notes.jsonl", [{"id": "a", "body": "x", "labels": ["A"]}])
    assert load_notes("jsonl", path, text_field="body")[0].text == "x"
    valid = "'codiesp', 'csv', 'jsonl', 'jsonl_union', 'mimic3', 'mimic4', 'synthetic'"
    with pytest.raises(ConfigError, match=f"source.kind: unknown value 'parquet' \\(expected one of {valid}"):
        load_notes("parquet", path)
    with pytest.raises(ConfigError, match=r"data.yaml: unknown key 'source.text_colum'"):
        load_notes("csv", path, text_colum="body")
    with pytest.raises(ConfigError, match=r"source.subtask: Input should be 'D' or 'P'"):
        load_notes("codiesp", tmp_path, subtask="X")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_union_prefixes_labels_and_ids_and_keeps_splits(tmp_path: Path) -> None:
    single = _write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "1", "text": "chest pain", "labels": ["C14"], "split": "train"},
            {"id": "2", "text": "lung tumour", "labels": "C04", "split": "test"},
        ],
    )
    multi = _write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"id": "1", "text": "cells divide", "labels": ["Sustaining proliferative signaling", "X"], "split": "dev"},
            {"id": "2", "text": "no hallmark here", "labels": [], "split": "train", "labels_fine": []},
        ],
    )
    raw = {
        "kind": "jsonl_union",
        "datasets": [
            {"name": "ohsumed", "path": str(single)},
            {"name": "hoc", "path": str(multi), "allow_empty_labels": True},
        ],
    }
    notes = validate(DataConfig, {"source": raw}, source="data.yaml").source.read()
    assert [n.id for n in notes] == ["ohsumed:1", "ohsumed:2", "hoc:1", "hoc:2"]  # the same ids, no collision
    assert [n.labels for n in notes] == [
        ("ohsumed:C14",),
        ("ohsumed:C04",),
        ("hoc:Sustaining proliferative signaling", "hoc:X"),
        (),
    ]
    assert [n.split for n in notes] == ["train", "test", "dev", "train"]
    assert notes[3].meta == {"dataset": "hoc", "labels_fine": []}
    # an empty label set is an error in a dataset that does not allow it
    raw["datasets"][1]["allow_empty_labels"] = False
    with pytest.raises(InputError, match="empty label set"):
        validate(DataConfig, {"source": raw}, source="data.yaml").source.read()


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ([], "at least 1"),
        ([{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], "unique"),
        ([{"name": "has space", "path": "x"}], "no spaces"),
        ([{"name": "a", "path": "x", "colour": 1}], "colour"),
    ],
)
def test_jsonl_union_rejects_bad_datasets(datasets: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(DataConfig, {"source": {"kind": "jsonl_union", "datasets": datasets}}, source="data.yaml")


@pytest.mark.skipif(
    not (SHARED / "data" / "hoc" / "hoc.jsonl").is_file()
    or not (SHARED / "data" / "ohsumed_single23" / "ohsumed_single23.jsonl").is_file(),
    reason="needs ../shared/data/hoc and ../shared/data/ohsumed_single23",
)
def test_medline_textcnn_config_reads_ohsumed_and_hoc() -> None:
    from medcoder.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "medline_textcnn.yaml", "train")
    source = config.data.source.model_copy(
        update={
            "datasets": [
                d.model_copy(update={"path": str(SHARED / "data" / Path(d.path).parent.name / Path(d.path).name)})
                for d in config.data.source.datasets
            ]
        }
    )
    notes = source.read()
    labels = {label for note in notes for label in note.labels}
    assert len(notes) == 7400 + 1851
    assert len({lab for lab in labels if lab.startswith("ohsumed:")}) == 23
    assert len({lab for lab in labels if lab.startswith("hoc:")}) == 10
