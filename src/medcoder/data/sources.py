"""Readers that turn source files into ``Note`` records.

Every reader returns a ``list[Note]`` that passed ``check_notes``; labels are
stripped and de-duplicated in file order. Each record is checked as it is
read, so an error names the file, the line, the record id and the field.
The MIMIC readers live in ``medcoder.data.mimic`` and are re-exported here.
"""

from __future__ import annotations

import csv
import inspect
import io
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from medcoder.data.mimic import read_mimic3, read_mimic4
from medcoder.data.records import SPLITS, Note, Span, check_notes
from medcoder.errors import ConfigError, InputError
from medcoder.io import iter_json_objects, iter_text_lines, json_type_name, read_text_file

__all__ = [
    "load_notes",
    "read_codiesp",
    "read_codiesp_spans",
    "read_csv",
    "read_jsonl",
    "read_mimic3",
    "read_mimic4",
]

# Common spellings of the validation split; anything else unknown is kept in meta.
_SPLIT_NAMES = {"train": "train", "dev": "dev", "test": "test", "val": "dev", "valid": "dev", "validation": "dev"}
_CODIESP_TEXT_FOLDERS = {"en": "text_files_en", "es": "text_files"}


class _NoteCollector:
    """Collects the notes of one file, checking each one where it was read."""

    def __init__(self, path: Path, *, id_field: str, text_field: str, labels_field: str, allow_empty_labels: bool):
        self.path = path
        self.id_field = id_field
        self.text_field = text_field
        self.labels_field = labels_field
        self.allow_empty_labels = allow_empty_labels
        self.notes: list[Note] = []
        self._first_line: dict[str, int] = {}

    def add(self, note: Note, line: int) -> None:
        where = {"path": self.path, "line": line, "record": note.id}
        if note.id in self._first_line:
            first = self._first_line[note.id]
            raise InputError(f"duplicate note id (first seen on line {first})", **where, field=self.id_field)
        if not note.text.strip():
            raise InputError("text is empty or whitespace", **where, field=self.text_field)
        if not note.labels and not self.allow_empty_labels:
            message = "empty label set (pass allow_empty_labels=True for unlabelled data)"
            raise InputError(message, **where, field=self.labels_field)
        self._first_line[note.id] = line
        self.notes.append(note)

    def finish(self) -> list[Note]:
        check_notes(self.notes, source=str(self.path), allow_empty_labels=self.allow_empty_labels)
        return self.notes


def read_jsonl(
    path: str | Path,
    *,
    id_field: str = "id",
    text_field: str = "text",
    labels_field: str = "labels",
    split_field: str = "split",
    text_pair_field: str | None = None,
    allow_empty_labels: bool = False,
) -> list[Note]:
    """Read one JSON object per line; blank lines are skipped.

    ``labels`` is a list of strings or a single string (an absent or null field
    means no label). A ``split`` outside train/dev/test (e.g. "background")
    gives ``split=None`` and is kept in ``meta["split"]``. Keys not used as a
    field go into ``meta``.
    """
    path = Path(path)
    collector = _NoteCollector(
        path, id_field=id_field, text_field=text_field, labels_field=labels_field, allow_empty_labels=allow_empty_labels
    )
    used = {id_field, text_field, labels_field, split_field, text_pair_field}
    for number, record in iter_json_objects(iter_text_lines(path), path):
        where: dict[str, Any] = {"path": path, "line": number}
        note_id = _json_id(record, id_field, where)
        where["record"] = note_id
        text = _json_string(record, text_field, where)
        text_pair = _json_string(record, text_pair_field, where) if text_pair_field else None
        split, meta = _parse_split(record.get(split_field), split_field, where)
        meta.update((key, value) for key, value in record.items() if key not in used)
        labels = _json_labels(record.get(labels_field), labels_field, where)
        collector.add(Note(note_id, text, labels, split, text_pair, meta=meta), number)
    return collector.finish()


def read_csv(
    path: str | Path,
    *,
    id_column: str = "id",
    text_column: str = "text",
    labels_column: str = "labels",
    split_column: str | None = None,
    text_pair_column: str | None = None,
    label_separator: str = ";",
    delimiter: str = ",",
    allow_empty_labels: bool = False,
) -> list[Note]:
    """Read a CSV file with a header row; quoted fields may span lines.

    Labels are one cell split on ``label_separator``. Columns not used go into
    ``meta``. Error line numbers are the file line where the row starts.
    """
    path = Path(path)
    # Notes are long; the csv module's default 128 KiB field limit is too small.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # strict: an unclosed quote is an error, not a row that swallows the rest of the file.
    reader = csv.reader(io.StringIO(read_text_file(path), newline=""), delimiter=delimiter, strict=True)
    rows = _csv_rows(reader, path)
    header = [name.strip() for name in next(rows, (1, []))[1]]
    if not header:
        raise InputError("empty file, expected a header row", path=path, line=1)
    wanted = [id_column, text_column, labels_column, split_column, text_pair_column]
    for column in filter(None, wanted):
        if column not in header:
            raise InputError(f"missing column; columns found: {', '.join(header)}", path=path, line=1, field=column)
        if header.count(column) > 1:
            raise InputError("column appears more than once in the header", path=path, line=1, field=column)
    collector = _NoteCollector(
        path,
        id_field=id_column,
        text_field=text_column,
        labels_field=labels_column,
        allow_empty_labels=allow_empty_labels,
    )
    for number, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields, found {len(row)}", path=path, line=number)
        cells = dict(zip(header, row, strict=True))
        note_id = cells[id_column].strip()
        if not note_id:
            raise InputError("empty note id", path=path, line=number, field=id_column)
        where: dict[str, Any] = {"path": path, "line": number, "record": note_id}
        split, meta = _parse_split(cells[split_column] or None, split_column, where) if split_column else (None, {})
        meta.update((key, value) for key, value in cells.items() if key not in wanted)
        labels = _unique(cells[labels_column].split(label_separator))
        text_pair = cells[text_pair_column] if text_pair_column else None
        if text_pair is not None and not text_pair.strip():
            raise InputError("text pair is empty or whitespace", **where, field=text_pair_column)
        collector.add(Note(note_id, cells[text_column], labels, split, text_pair, meta=meta), number)
    return collector.finish()


def read_codiesp(root: str | Path, *, subtask: str = "D", language: str = "en") -> list[Note]:
    """Read the CodiEsp release: ``root/{split}/{split}{D|P}.tsv`` + one text file per document.

    ``subtask`` "D" (diagnoses) or "P" (procedures); ``language`` "en" reads
    ``text_files_en/`` (machine translation), "es" reads ``text_files/``. The
    split is the folder; codes are upper-cased (``n44.8 -> N44.8``). Some
    documents have no procedure, so empty label sets are allowed for "P" only.
    """
    subtask = subtask.upper()
    if subtask not in ("D", "P"):
        raise ConfigError(f"subtask must be 'D' or 'P', got {subtask!r}")
    if language not in _CODIESP_TEXT_FOLDERS:
        raise ConfigError(f"language must be one of {sorted(_CODIESP_TEXT_FOLDERS)}, got {language!r}")
    root = Path(root)
    splits = [split for split in SPLITS if (root / split).is_dir()]
    if not splits:
        raise InputError("no train/, dev/ or test/ folder found (expected the CodiEsp release layout)", path=root)
    notes: list[Note] = []
    for split in splits:
        folder = root / split
        tsv = folder / f"{split}{subtask}.tsv"
        text_dir = folder / _CODIESP_TEXT_FOLDERS[language]
        if not text_dir.is_dir():
            raise InputError("text folder not found", path=text_dir)
        text_files = {file.stem: file for file in sorted(text_dir.glob("*.txt"))}
        codes: dict[str, dict[str, None]] = {}
        for number, (article, code) in _codiesp_rows(tsv, 2):
            if article not in text_files:
                message = f"code for a document with no text file ({text_dir / article}.txt)"
                raise InputError(message, path=tsv, line=number, record=article)
            codes.setdefault(article, {})[code.upper()] = None
        for article, file in text_files.items():
            text = read_text_file(file)
            if not text.strip():
                raise InputError("text file is empty or whitespace", path=file, record=article, field="text")
            if article not in codes and subtask == "D":
                raise InputError(f"document has no code in {tsv}", path=file, record=article, field="labels")
            notes.append(Note(article, text, tuple(codes.get(article, ())), split, meta={"language": language}))
    check_notes(notes, source=str(root), allow_empty_labels=subtask == "P")
    return notes


def read_codiesp_spans(root: str | Path, split: str, language: str = "es") -> dict[str, list[Span]]:
    """Read CodiEsp-X evidence spans: ``root/{split}/{split}X.tsv`` -> ``{article id: [Span]}``.

    Columns: articleID, DIAGNOSTICO|PROCEDIMIENTO, code, text reference, and
    positions "start end" with ';' between the pieces of a discontinuous
    mention; each piece becomes one ``Span`` labelled with the upper-cased
    code. Empty pieces ("341 341", present in the release) are skipped. The
    positions index the Spanish originals, so ``language`` must be "es".
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if language != "es":
        raise ConfigError(f"CodiEsp-X positions index the Spanish texts; language must be 'es', got {language!r}")
    tsv = Path(root) / split / f"{split}X.tsv"
    spans: dict[str, list[Span]] = {}
    for number, (article, kind, code, _, positions) in _codiesp_rows(tsv, 5):
        where: dict[str, Any] = {"path": tsv, "line": number, "record": article}
        if kind not in ("DIAGNOSTICO", "PROCEDIMIENTO"):
            raise InputError(f"expected DIAGNOSTICO or PROCEDIMIENTO, found {kind!r}", **where, field="label")
        pieces = spans.setdefault(article, [])
        for piece in positions.split(";"):
            bounds = piece.split()
            if len(bounds) != 2 or not all(bound.isdigit() for bound in bounds) or int(bounds[0]) > int(bounds[1]):
                raise InputError(f"expected 'start end' offsets, found {piece!r}", **where, field="reference-position")
            if bounds[0] != bounds[1]:
                pieces.append(Span(int(bounds[0]), int(bounds[1]), code.upper()))
    return spans


# The kinds a config may name; each reader takes the path first, then keyword options.
READERS: dict[str, Callable[..., list[Note]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "mimic3": read_mimic3,
    "mimic4": read_mimic4,
    "codiesp": read_codiesp,
}


def load_notes(kind: str, path: str | Path, **options: Any) -> list[Note]:
    """Read notes with the reader for ``kind``; an option it does not take is an error."""
    reader = READERS.get(kind)
    if reader is None:
        raise ConfigError(f"unknown source kind {kind!r}; valid kinds: {', '.join(READERS)}")
    parameters = list(inspect.signature(reader).parameters)[1:]
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for source kind {kind!r}; valid options: {', '.join(parameters)}"
        )
    return reader(path, **options)


def _csv_rows(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line where the row starts, row)``; a CSV syntax error names that line."""
    start = reader.line_num + 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", path=path, line=start) from None


def _codiesp_rows(tsv: Path, width: int) -> Iterable[tuple[int, list[str]]]:
    """Yield ``(line, fields)`` of a header-less CodiEsp TSV, fields stripped and non-empty."""
    for number, line in iter_text_lines(tsv):
        if not line.strip():
            continue
        fields = [value.strip() for value in line.split("\t")]
        # The text reference (4th field of the X files) may legitimately be empty.
        if len(fields) != width or not all(value for index, value in enumerate(fields) if index != 3):
            raise InputError(f"expected {width} non-empty tab-separated fields, found {line!r}", path=tsv, line=number)
        yield number, fields


def _parse_split(raw: Any, field: str, where: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Return ``(split, meta)``; an unknown split name is kept as ``meta["split"]``."""
    if raw is None:
        return None, {}
    if not isinstance(raw, str):
        raise InputError(f"expected a string, found {json_type_name(raw)}", **where, field=field)
    split = _SPLIT_NAMES.get(raw.strip().lower())
    return (split, {}) if split else (None, {"split": raw})


def _json_id(record: dict[str, Any], field: str, where: dict[str, Any]) -> str:
    if field not in record:
        raise InputError("missing field", **where, field=field)
    value = record[field]
    # Integer ids are common in exports; bool is an int subclass but never an id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"expected a string or integer, found {json_type_name(value)}", **where, field=field)
    if not value.strip():
        raise InputError("empty note id", **where, field=field)
    return value.strip()


def _json_string(record: dict[str, Any], field: str, where: dict[str, Any]) -> str:
    if field not in record:
        raise InputError("missing field", **where, field=field)
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"expected a string, found {json_type_name(value)}", **where, field=field)
    if not value.strip():
        raise InputError("text is empty or whitespace", **where, field=field)
    return value


def _json_labels(value: Any, field: str, where: dict[str, Any]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InputError(f"expected a list of strings, found {json_type_name(value)}", **where, field=field)
    for position, label in enumerate(value):
        if not isinstance(label, str):
            message = f"expected a list of strings, found {json_type_name(label)} at position {position}"
            raise InputError(message, **where, field=field)
    return _unique(value)


def _unique(labels: Iterable[str]) -> tuple[str, ...]:
    """Strip labels, drop empty ones and duplicates, keep first-seen order."""
    return tuple(dict.fromkeys(label.strip() for label in labels if label.strip()))
