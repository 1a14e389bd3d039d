"""What every data source shares: the config base class and the record checks of file readers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medcoder.config.base import Strict
from medcoder.data.records import Note, check_notes
from medcoder.errors import InputError
from medcoder.io import json_type_name

# Common spellings of the validation split; anything else unknown is kept in meta.
_SPLIT_NAMES = {"train": "train", "dev": "dev", "test": "test", "val": "dev", "valid": "dev", "validation": "dev"}


class SourceConfig(Strict):
    """A data source's config section; subclasses declare ``kind`` and their options, and read notes."""

    kind: str

    def read(self) -> list[Note]:
        """Every note of the source, checked (ids unique, texts non-empty, labels as the source requires)."""
        raise NotImplementedError

    def record_fields(self) -> dict[str, str | None]:
        """This source's names for a record's fields, as ``JsonlSource`` options (``id_field``, ``text_field``,
        ``labels_field``, ``split_field``, ``text_pair_field``): ``medcoder evaluate --data FILE.jsonl`` reads
        other notes of a model with them. Empty: the JSONL defaults."""
        return {}


class NoteCollector:
    """Collects the notes of one file, checking each one where it was read.

    ``fields`` is the source's :meth:`SourceConfig.record_fields`: its errors name the source's own field names.
    """

    def __init__(self, path: Path, fields: dict[str, str | None], *, allow_empty_labels: bool):
        self.path = path
        self.id_field = fields["id_field"]
        self.text_field = fields["text_field"]
        self.labels_field = fields["labels_field"]
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
            message = "empty label set (set allow_empty_labels: true for unlabelled data)"
            raise InputError(message, **where, field=self.labels_field)
        self._first_line[note.id] = line
        self.notes.append(note)

    def finish(self) -> list[Note]:
        check_notes(self.notes, source=str(self.path), allow_empty_labels=self.allow_empty_labels)
        return self.notes


def parse_split(raw: Any, field: str, where: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Return ``(split, meta)``; an unknown split name is kept as ``meta["split"]``."""
    if raw is None:
        return None, {}
    if not isinstance(raw, str):
        raise InputError(f"expected a string, found {json_type_name(raw)}", **where, field=field)
    split = _SPLIT_NAMES.get(raw.strip().lower())
    return (split, {}) if split else (None, {"split": raw})


def unique_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Strip labels, drop empty ones and duplicates, keep first-seen order."""
    return tuple(dict.fromkeys(label.strip() for label in labels if label.strip()))
