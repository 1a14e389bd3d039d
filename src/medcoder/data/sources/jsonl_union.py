"""``kind: jsonl_union``: several JSONL datasets read as one multi-label dataset.

Built for a larger transfer-learning source task (e.g. OHSUMED + Hallmarks of
Cancer, both MEDLINE abstracts): each dataset keeps its own notes and splits,
and its labels are prefixed with the dataset's name (``ohsumed:C04``,
``hoc:Resisting cell death``), so the label spaces never collide and one
multi-label model learns all of them at once. Note ids are prefixed the same
way, so two datasets may reuse an id.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from pydantic import Field, field_validator

from medcoder.config.base import PathText, Strict
from medcoder.data.records import Note, check_notes
from medcoder.data.sources.base import SourceConfig
from medcoder.data.sources.jsonl import JsonlSource
from medcoder.registry import SOURCES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class JsonlDataset(Strict):
    """One JSONL file of the union, with its :class:`JsonlSource` field names."""

    name: str  # prefix of its labels and note ids: "<name><separator><label>"
    path: PathText
    id_field: str = "id"
    text_field: str = "text"
    labels_field: str = "labels"
    split_field: str = "split"
    allow_empty_labels: bool = False  # e.g. HoC abstracts with no hallmark (true negatives)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"dataset name {value!r}: use letters, digits, '_', '.', '-' (no spaces)")
        return value


@SOURCES.register("jsonl_union")
class JsonlUnionSource(SourceConfig):
    """Several JSONL files, one label space: every label is ``<dataset name><separator><label>``.

    A note keeps its dataset's split; its ``meta["dataset"]`` names the dataset.
    A dataset whose notes may lack labels says so (``allow_empty_labels``); the
    union allows empty label sets when any of its datasets does.
    """

    kind: Literal["jsonl_union"] = "jsonl_union"
    datasets: list[JsonlDataset] = Field(min_length=1)
    separator: str = Field(":", min_length=1)

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, value: list[JsonlDataset]) -> list[JsonlDataset]:
        names = [d.name for d in value]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        return value

    def read(self) -> list[Note]:
        notes: list[Note] = []
        for dataset in self.datasets:
            source = JsonlSource(**dataset.model_dump(exclude={"name"}))  # every other field is a JsonlSource option
            prefix = dataset.name + self.separator
            for note in source.read():
                notes.append(
                    dataclasses.replace(
                        note,
                        id=prefix + note.id,
                        labels=tuple(prefix + label for label in note.labels),
                        meta={**note.meta, "dataset": dataset.name},
                    )
                )
        allow_empty = any(d.allow_empty_labels for d in self.datasets)
        check_notes(notes, source=" + ".join(str(d.path) for d in self.datasets), allow_empty_labels=allow_empty)
        return notes
