"""A run's data: the configured source's notes in train/dev/test, and the label space fitted on train."""

from __future__ import annotations

from pathlib import Path

from medcoder.config import DataConfig, LabelConfig
from medcoder.data.labels import LabelSpace
from medcoder.data.records import SPLITS, Note
from medcoder.data.splits import apply_splits
from medcoder.errors import InputError, MedcoderError
from medcoder.io import iter_json_objects, iter_text_lines


def load_dataset(data: DataConfig) -> dict[str, list[Note]]:
    """Read the configured source and return its notes grouped by train/dev/test.

    The source's own split is kept; otherwise the seeded stratified split of
    ``data`` is made (or read back from ``data.split_file``).
    """
    notes = data.source.read()
    notes = apply_splits(notes, split_file=data.split_file, ratios=data.split_ratios, seed=data.split_seed)
    groups: dict[str, list[Note]] = {split: [] for split in SPLITS}
    for note in notes:
        if note.split in groups:
            groups[note.split].append(note)
    empty = [split for split in SPLITS if not groups[split]]
    if empty:
        raise MedcoderError(f"data source {data.source.kind!r} has no notes in split(s): {', '.join(empty)}")
    return groups


def texts_of(notes: list[Note]) -> tuple[list[str], list[str] | None]:
    """Texts and, for sentence pairs, second texts of ``notes``."""
    pairs = [note.text_pair or "" for note in notes] if any(n.text_pair is not None for n in notes) else None
    return [note.text for note in notes], pairs


def fit_label_space(labels: LabelConfig, task: str, train: list[Note]) -> LabelSpace:
    """The label space ``labels`` describes for a ``task``, fitted on the training notes only."""
    return LabelSpace.fit(
        [note.labels for note in train], labels, task="multilabel" if task == "multilabel" else "multiclass"
    )


def read_unlabeled_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """The ``text_field`` string of every record of a JSON-lines file (e.g. CodiEsp background notes)."""
    texts = []
    for line, record in iter_json_objects(iter_text_lines(path), path):
        text = record.get(text_field)
        if not isinstance(text, str):
            record_id = record.get("id")
            problem = "missing" if text_field not in record else f"expected a string, got {type(text).__name__}"
            record_id = record_id if isinstance(record_id, str) else None
            raise InputError(problem, path=path, line=line, record=record_id, field=text_field)
        texts.append(text)
    return texts
