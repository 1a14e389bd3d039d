"""``kind: csv``: a CSV file with configurable column names; labels joined by a separator."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Literal

from medcoder.config.base import PathText
from medcoder.data.records import Note
from medcoder.data.sources.base import NoteCollector, SourceConfig, parse_split, unique_labels
from medcoder.errors import InputError
from medcoder.io import iter_text_lines
from medcoder.registry import SOURCES


@SOURCES.register("csv")
class CsvSource(SourceConfig):
    """A CSV file with a header row; quoted fields may span lines.

    Labels are one cell split on ``label_separator``. Columns not used go into
    ``meta``. Error line numbers are the file line where the row starts.
    """

    kind: Literal["csv"] = "csv"
    path: PathText
    id_column: str = "id"
    text_column: str = "text"
    labels_column: str = "labels"
    split_column: str | None = None
    text_pair_column: str | None = None
    label_separator: str = ";"
    delimiter: str = ","
    allow_empty_labels: bool = False

    def record_fields(self) -> dict[str, str | None]:
        return {
            "id_field": self.id_column,
            "text_field": self.text_column,
            "labels_field": self.labels_column,
            "split_field": self.split_column or "split",
            "text_pair_field": self.text_pair_column,
        }

    def read(self) -> list[Note]:
        path = Path(self.path)
        # Notes are long; the csv module's default 128 KiB field limit is too small.
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        # strict: an unclosed quote is an error, not a row that swallows the rest of the file.
        # Streamed line by line (a quoted field may span lines: the endings are kept for the csv module).
        lines = (line for _, line in iter_text_lines(path, keepends=True))
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        rows = _csv_rows(reader, path)
        header = [name.strip() for name in next(rows, (1, []))[1]]
        if not header:
            raise InputError("empty file, expected a header row", path=path, line=1)
        wanted = [self.id_column, self.text_column, self.labels_column, self.split_column, self.text_pair_column]
        for column in filter(None, wanted):
            if column not in header:
                raise InputError(f"missing column; columns found: {', '.join(header)}", path=path, line=1, field=column)
            if header.count(column) > 1:
                raise InputError("column appears more than once in the header", path=path, line=1, field=column)
        collector = NoteCollector(path, self.record_fields(), allow_empty_labels=self.allow_empty_labels)
        for number, row in rows:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} fields, found {len(row)}", path=path, line=number)
            cells = dict(zip(header, row, strict=True))
            note_id = cells[self.id_column].strip()
            if not note_id:
                raise InputError("empty note id", path=path, line=number, field=self.id_column)
            where: dict[str, Any] = {"path": path, "line": number, "record": note_id}
            split_column = self.split_column
            split, meta = parse_split(cells[split_column] or None, split_column, where) if split_column else (None, {})
            meta.update((key, value) for key, value in cells.items() if key not in wanted)
            labels = unique_labels(cells[self.labels_column].split(self.label_separator))
            text_pair = cells[self.text_pair_column] if self.text_pair_column else None
            if text_pair is not None and not text_pair.strip():
                raise InputError("text pair is empty or whitespace", **where, field=self.text_pair_column)
            collector.add(Note(note_id, cells[self.text_column], labels, split, text_pair, meta=meta), number)
        return collector.finish()


def _csv_rows(reader: Any, path: Path) -> Any:
    """Yield ``(line where the row starts, row)``; a CSV syntax error names that line."""
    start = reader.line_num + 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", path=path, line=start) from None
