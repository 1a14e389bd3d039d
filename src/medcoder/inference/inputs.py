"""Read the notes to code, as a stream: JSONL files, Parquet files, text files (one note each) or stdin.

Every record is yielded as it is read, so memory stays at one record (a Parquet
file: one record batch) however large the input. A record that cannot be
coded (empty text, a field of the wrong type, a broken JSON line, bytes that
are not UTF-8) is yielded too, carrying its error, so the caller decides
whether it stops the batch (``--strict``) or becomes an error record.

Records are numbered 0, 1, 2... across all inputs in order (``ordinal``),
good and bad alike; blank JSONL lines are not records. ``--shard I/N`` keeps
the records whose ordinal is I modulo N.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medcoder.errors import InputError, MedcoderError
from medcoder.io import BOM, iter_byte_lines, json_type_name, not_utf8_message

STDIN = "<stdin>"
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_ROWS = 1024  # rows decoded at once from a Parquet file

# The kinds of bad record, as error records and the summary name them.
EMPTY_TEXT = "empty_text"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
NOT_UTF8 = "not_utf8"


@dataclass(frozen=True)
class InputRecord:
    """One record of the input, good (``text`` set) or bad (``error`` set)."""

    ordinal: int  # 0-based position among all records of all inputs
    path: str  # the input as given, or <stdin>
    line: int | None  # 1-based line (JSONL), row (Parquet) or the bad line of a text file; None: a whole file
    id: str  # the record's id, or FILE:LINE where it has none or it cannot be read
    text: str | None = None
    pair: str | None = None  # the second text of a sentence-pair model
    error: str | None = None  # what is wrong with the record
    kind: str | None = None  # the kind of error (EMPTY_TEXT, WRONG_TYPE, ...)
    field: str | None = None  # the field at fault

    @property
    def source(self) -> str:
        """``FILE:LINE`` (``FILE:ROW`` for Parquet, ``FILE`` for a text file)."""
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def input_error(self) -> InputError:
        """The record's error as the one-line ``InputError`` of ``--strict``."""
        record = None if self.kind in (MALFORMED_JSON, NOT_AN_OBJECT, NOT_UTF8) or self.field == "id" else self.id
        return InputError(self.error or "bad record", path=self.path, line=self.line, record=record, field=self.field)


class _Bad(Exception):
    """A bad field of one record (caught inside this module)."""

    def __init__(self, message: str, kind: str, field: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


def _unicode_ok(value: str) -> bool:
    """False for a string holding lone surrogates (``"\\ud800"`` in JSON): it cannot be written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_value(value: Any, field: str, *, present: bool = True) -> str:
    if not present:
        raise _Bad("missing field", MISSING_FIELD, field)
    if not isinstance(value, str):
        raise _Bad(f"expected a string, found {json_type_name(value)}", WRONG_TYPE, field)
    if not value.strip():
        raise _Bad("text is empty or whitespace", EMPTY_TEXT, field)
    if not _unicode_ok(value):
        raise _Bad("not valid Unicode (a lone surrogate escape)", NOT_UTF8, field)
    return value


def _id_value(value: Any, default: str, field: str) -> str:
    """A record's id: a string or an integer; absent or null gives ``default`` (``FILE:LINE``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(f"expected a string or integer id, found {json_type_name(value)}", WRONG_TYPE, field)
    if isinstance(value, str) and not _unicode_ok(value):
        raise _Bad("not valid Unicode (a lone surrogate escape)", NOT_UTF8, field)
    return str(value)


def input_kind(path: Path, stdin_format: str) -> str:
    """``jsonl``, ``parquet`` or ``text`` (one note) for an input path (``-``: stdin)."""
    if str(path) == "-":
        return "jsonl" if stdin_format == "jsonl" else "text"
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


@dataclass(frozen=True)
class PredictionInputs:
    """What to read and how: the input paths (``-`` is stdin) and the field names of JSONL/Parquet records.

    A ``.jsonl``/``.ndjson`` file holds one note a line, a ``.parquet`` file one
    a row; any other file is one note whose id is the file name. With
    ``pair_field`` (a sentence-pair model) every note is a record holding its
    second text in that field.
    """

    paths: tuple[Path, ...] = (Path("-"),)
    stdin_format: str = "text"
    text_field: str = "text"
    id_field: str = "id"
    pair_field: str | None = None

    def options(self) -> dict[str, Any]:
        """What decides the records read (recorded to check that a resumed run reads the same)."""
        return {
            "inputs": [str(p) for p in self.paths],
            "stdin_format": self.stdin_format,
            "text_field": self.text_field,
            "id_field": self.id_field,
            "pair_field": self.pair_field,
        }

    def check(self) -> None:
        """Raise before any work on what cannot be read at all: a missing file, a folder, a foreign Parquet file."""
        if self.stdin_format not in ("text", "jsonl"):
            raise MedcoderError(f"--stdin-format must be 'text' or 'jsonl', got {self.stdin_format!r}")
        if not self.paths:
            raise MedcoderError("no inputs")
        if sum(str(p) == "-" for p in self.paths) > 1:
            raise MedcoderError("stdin ('-') can be read only once")
        for path in self.paths:
            kind = input_kind(path, self.stdin_format)
            if self.pair_field is not None and kind == "text":
                where = f"{STDIN} (use --stdin-format jsonl)" if str(path) == "-" else str(path)
                raise MedcoderError(
                    f"{where}: this model codes text pairs; give JSONL records with a {self.pair_field!r} field"
                )
            if str(path) == "-":
                continue
            if not path.exists():
                raise InputError("file not found", path=path)
            if path.is_dir():
                raise InputError("expected a file, found a directory", path=path)
            if kind == "parquet":
                _parquet_columns(path, self)

    def total_bytes(self) -> int | None:
        """The inputs' size in bytes (None with stdin): the denominator of the progress shown."""
        if any(str(p) == "-" for p in self.paths):
            return None
        return sum(p.stat().st_size for p in self.paths)

    def open(self, *, shard: tuple[int, int] = (0, 1), skip: int = 0, skip_digest: str | None = None) -> RecordStream:
        """The records of this shard, in input order; the first ``skip`` records are only checked (``--resume``)."""
        return RecordStream(self, shard=shard, skip=skip, skip_digest=skip_digest)


class RecordStream:
    """Iterates the records of one shard and keeps count of everything read.

    ``records_read`` (records of every shard, in order) and :meth:`digest` (a
    SHA-256 over those records' bytes) always describe the records read up to
    the last one yielded, so a caller that stops after a record can record
    exactly where it stopped. Records of other shards and the first ``skip``
    records are hashed, not parsed; on reaching ``skip`` the digest must equal
    ``skip_digest`` (the inputs are the ones a resumed run began with).
    """

    def __init__(self, inputs: PredictionInputs, *, shard: tuple[int, int], skip: int, skip_digest: str | None):
        self.inputs = inputs
        self.index, self.count = shard
        self.skip = skip
        self.skip_digest = skip_digest
        self.records_read = 0
        self.bytes_read = 0  # of the input files (Parquet: estimated from rows read)
        self._hash = hashlib.sha256()
        self._checked = skip_digest is None

    def digest(self) -> str:
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[InputRecord]:
        self._check_skipped()
        for path in self.inputs.paths:
            kind = input_kind(path, self.inputs.stdin_format)
            if kind == "jsonl":
                if str(path) == "-":
                    yield from self._jsonl(sys.stdin.buffer, STDIN)
                else:
                    try:
                        with path.open("rb") as handle:
                            yield from self._jsonl(handle, str(path))
                    except OSError as exc:
                        raise InputError(f"could not be read: {exc.strerror or exc}", path=path) from None
            elif kind == "parquet":
                yield from self._parquet(path)
            else:
                yield from self._text(path)
        if self.records_read < self.skip:
            raise MedcoderError(
                f"--resume: the inputs hold {self.records_read:,} records, fewer than the {self.skip:,} "
                "the interrupted run had read; they are not the inputs it began with (start over with --overwrite)"
            )

    # ------------------------------------------------------------ bookkeeping
    def _take(self, content: bytes) -> bool:
        """Count and hash one record; whether this shard parses it (not skipped, its ordinal is ours)."""
        ordinal = self.records_read
        self._hash.update(content)
        self._hash.update(b"\n")
        self.records_read += 1
        return ordinal >= self.skip and ordinal % self.count == self.index

    def _check_skipped(self) -> None:
        if not self._checked and self.records_read == self.skip:
            self._checked = True
            if self.digest() != self.skip_digest:
                raise MedcoderError(
                    f"--resume: the first {self.skip:,} records of the inputs differ from those the interrupted "
                    "run coded; the inputs changed (start over with --overwrite)"
                )

    # ---------------------------------------------------------------- readers
    def _jsonl(self, handle: BinaryIO, path: str) -> Iterator[InputRecord]:
        base = self.bytes_read
        name = Path(path).name
        for number, start, raw in iter_byte_lines(handle):
            self.bytes_read = base + start + len(raw)
            content = raw.rstrip(b"\r\n")
            if not content.strip():
                continue  # a blank line is no record
            ordinal = self.records_read
            if not self._take(content):
                self._check_skipped()
                continue
            default_id = f"{name}:{number}"
            yield self._json_record(content, ordinal, path, number, default_id, start)
            self._check_skipped()

    def _json_record(
        self, content: bytes, ordinal: int, path: str, number: int, default_id: str, start: int
    ) -> InputRecord:
        def bad(message: str, kind: str, field: str | None = None, note_id: str = default_id) -> InputRecord:
            return InputRecord(ordinal, path, number, note_id, error=message, kind=kind, field=field)

        try:
            line = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return bad(not_utf8_message(content, exc, offset=start), NOT_UTF8)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return bad(f"malformed JSON: {exc.msg} (column {exc.colno})", MALFORMED_JSON)
        except RecursionError:
            return bad("malformed JSON: nested too deeply", MALFORMED_JSON)
        if not isinstance(record, dict):
            return bad(f"expected a JSON object, found {json_type_name(record)}", NOT_AN_OBJECT)
        return self._fields(record.get, record.__contains__, ordinal, path, number, default_id)

    def _fields(self, get: Any, has: Any, ordinal: int, path: str, number: int, default_id: str) -> InputRecord:
        """The record of one JSON object or Parquet row, read through ``get(field)`` / ``has(field)``."""
        inputs = self.inputs
        try:
            note_id = _id_value(get(inputs.id_field), default_id, inputs.id_field)
        except _Bad as exc:
            return InputRecord(ordinal, path, number, default_id, error=str(exc), kind=exc.kind, field=exc.field)
        try:
            text = _text_value(get(inputs.text_field), inputs.text_field, present=has(inputs.text_field))
            pair = None
            if inputs.pair_field is not None:
                pair = _text_value(get(inputs.pair_field), inputs.pair_field, present=has(inputs.pair_field))
        except _Bad as exc:
            return InputRecord(ordinal, path, number, note_id, error=str(exc), kind=exc.kind, field=exc.field)
        return InputRecord(ordinal, path, number, note_id, text=text, pair=pair)

    def _text(self, path: Path) -> Iterator[InputRecord]:
        """A whole text file (or stdin) as one note, whose id is the file name (``stdin``)."""
        stdin = str(path) == "-"
        try:
            data = sys.stdin.buffer.read() if stdin else path.read_bytes()
        except OSError as exc:
            raise InputError(f"could not be read: {exc.strerror or exc}", path=path) from None
        self.bytes_read += len(data)
        name, note_id = (STDIN, "stdin") if stdin else (str(path), path.name)
        ordinal = self.records_read
        if self._take(data):
            yield self._text_record(data, ordinal, name, note_id)
        self._check_skipped()

    @staticmethod
    def _text_record(data: bytes, ordinal: int, name: str, note_id: str) -> InputRecord:
        bom = len(BOM) if data.startswith(BOM) else 0
        try:
            text = data[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: bom + exc.start].count(b"\n") + 1
            message = not_utf8_message(data[bom:], exc, offset=bom)
            return InputRecord(ordinal, name, line, note_id, error=message, kind=NOT_UTF8)
        if not text.strip():
            return InputRecord(ordinal, name, None, note_id, error="text is empty or whitespace", kind=EMPTY_TEXT)
        return InputRecord(ordinal, name, None, note_id, text=text)

    def _parquet(self, path: Path) -> Iterator[InputRecord]:
        """Rows of a Parquet file, ``_PARQUET_ROWS`` at a time, reading only the id and text columns."""
        handle, columns = _parquet_columns(path, self.inputs)
        size = path.stat().st_size
        rows = max(handle.metadata.num_rows, 1)
        base = self.bytes_read
        name = path.name
        number = 0
        try:
            batches = handle.iter_batches(batch_size=_PARQUET_ROWS, columns=columns)
            for batch in batches:
                values = {column: batch.column(column).to_pylist() for column in columns}
                for i in range(batch.num_rows):
                    number += 1
                    row = {column: values[column][i] for column in columns}
                    ordinal = self.records_read
                    content = json.dumps([row.get(c) for c in columns], default=repr).encode("utf-8")
                    if self._take(content):
                        yield self._fields(row.get, row.__contains__, ordinal, str(path), number, f"{name}:{number}")
                    self._check_skipped()
                self.bytes_read = base + int(size * number / rows)
        except MedcoderError:
            raise
        except Exception as exc:  # pyarrow's errors: a corrupt page, a truncated file
            raise InputError(f"unreadable Parquet data after row {number:,}: {exc}", path=path) from None
        finally:
            handle.close()
        self.bytes_read = base + size


def _parquet_columns(path: Path, inputs: PredictionInputs) -> tuple[Any, list[str]]:
    """An open ``ParquetFile`` and the columns to read (the id column only when the file has it)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MedcoderError(f"{path}: reading Parquet needs pyarrow: pip install 'medcoder[parquet]'") from None
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # ArrowInvalid and friends: not Parquet, truncated
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
    names = set(handle.schema_arrow.names)
    wanted = [inputs.text_field] + ([inputs.pair_field] if inputs.pair_field is not None else [])
    for field in wanted:
        if field not in names:
            handle.close()
            listed = ", ".join(sorted(names)) or "none"
            raise InputError(f"no such column (the file has: {listed})", path=path, field=field)
    columns = ([inputs.id_field] if inputs.id_field in names else []) + wanted
    return handle, columns
