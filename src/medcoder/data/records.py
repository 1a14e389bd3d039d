"""The ``Note`` record and dataset splits. No torch here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medcoder.errors import InputError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Span:
    """A character span ``text[start:end]`` that is evidence for ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Note:
    """One document.

    ``labels`` are codes/classes as strings, in file order, without duplicates.
    ``text_pair`` is the second text of a sentence-pair task (e.g. an NLI
    hypothesis); it is ``None`` otherwise. ``split`` is the dataset's own split
    when it has one. ``spans`` are evidence spans when the source records them.
    """

    id: str
    text: str
    labels: tuple[str, ...] = ()
    split: str | None = None
    text_pair: str | None = None
    spans: tuple[Span, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def check_notes(notes: Sequence[Note], *, source: str, allow_empty_labels: bool = False) -> None:
    """Reject duplicate ids, empty texts and (unless allowed) empty label sets.

    ``source`` names the file or dataset in the error message.
    """
    if not notes:
        raise InputError("no notes found", path=source)
    seen: Counter[str] = Counter()
    for note in notes:
        seen[note.id] += 1
        if seen[note.id] == 2:
            raise InputError("duplicate note id", path=source, record=note.id)
        if not note.text.strip():
            raise InputError("note text is empty or whitespace", path=source, record=note.id, field="text")
        if not allow_empty_labels and not note.labels:
            raise InputError("note has an empty label set", path=source, record=note.id, field="labels")


def by_split(notes: Iterable[Note]) -> dict[str, list[Note]]:
    """Group notes by their ``split`` attribute (``None`` grouped under ``""``)."""
    groups: dict[str, list[Note]] = {}
    for note in notes:
        groups.setdefault(note.split or "", []).append(note)
    return groups
