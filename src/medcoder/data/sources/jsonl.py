"""``kind: jsonl``: one JSON object per line, field names configurable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from medcoder.config.base import PathText
from medcoder.data.records import Note
from medcoder.data.sources.base import NoteCollector, SourceConfig, parse_split, unique_labels
from medcoder.errors import InputError
from medcoder.io import iter_json_objects, iter_text_lines, json_type_name
from medcoder.registry import SOURCES


@SOURCES.register("jsonl")
class JsonlSource(SourceConfig):
    """One JSON object per line; blank lines are skipped.

    ``labels`` is a list of strings or a single string (an absent or null field
    means no label). A ``split`` outside train/dev/test (e.g. "background")
    gives ``split=None`` and is kept in ``meta["split"]``. Keys not used as a
    field go into ``meta``.
    """

    kind: Literal["jsonl"] = "jsonl"
    path: PathText
    id_field: str = "id"
    text_field: str = "text"
    labels_field: str = "labels"
    split_field: str = "split"
    text_pair_field: str | None = None
    allow_empty_labels: bool = False  # unlabelled notes (e.g. background text) are allowed

    def record_fields(self) -> dict[str, str | None]:
        return self.model_dump(include={"id_field", "text_field", "labels_field", "split_field", "text_pair_field"})

    def read(self) -> list[Note]:
        path = Path(self.path)
        collector = NoteCollector(path, self.record_fields(), allow_empty_labels=self.allow_empty_labels)
        used = {self.id_field, self.text_field, self.labels_field, self.split_field, self.text_pair_field}
        for number, record in iter_json_objects(iter_text_lines(path), path):
            where: dict[str, Any] = {"path": path, "line": number}
            note_id = _json_id(record, self.id_field, where)
            where["record"] = note_id
            text = _json_string(record, self.text_field, where)
            text_pair = _json_string(record, self.text_pair_field, where) if self.text_pair_field else None
            split, meta = parse_split(record.get(self.split_field), self.split_field, where)
            meta.update((key, value) for key, value in record.items() if key not in used)
            labels = _json_labels(record.get(self.labels_field), self.labels_field, where)
            collector.add(Note(note_id, text, labels, split, text_pair, meta=meta), number)
        return collector.finish()


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
    return unique_labels(value)
