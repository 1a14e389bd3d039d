"""Train/dev/test splits: multi-label iterative stratification and split files.

``stratified_split`` is Sechidis et al. (2011) iterative stratification with
three changes that make its guarantees exact rather than approximate:

* part sizes are fixed up front (largest-remainder rounding of the ratios) and
  a full part takes no more notes, so sizes match the ratios to within one;
* when a label with at least ``MIN_DOCS_PER_PART_LABEL`` documents is
  distributed, every part that has none of it yet gets one of its documents
  first (plain Sechidis sends all 3 documents of a 3-document label to train
  and test at ratios 0.7/0.1/0.2);
* a repair pass swaps documents between parts for any such label still
  missing from a part, without taking any label's last document from a part.

The result depends only on the notes' ids, labels and the seed, not on the
order of ``notes``.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.data.records import SPLITS, Note
from medcoder.errors import ConfigError, InputError
from medcoder.io import atomic_write_json, read_json_file

logger = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
MIN_DOCS_PER_PART_LABEL = 3


def part_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` into ``len(ratios)`` integer sizes by largest remainder (ties: earlier part)."""
    exact = [n * ratio for ratio in ratios]
    sizes = [int(value) for value in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda part: (-(exact[part] - sizes[part]), part))
    for part in by_remainder[: n - sum(sizes)]:
        sizes[part] += 1
    return sizes


def stratified_split(
    notes: Sequence[Note], *, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0
) -> dict[str, str]:
    """Map each note id to "train", "dev" or "test", stratified on labels.

    Part sizes equal ``part_sizes(len(notes), ratios)``; every label with at
    least 3 documents appears in every non-empty part whenever the sizes allow
    it. Deterministic for a ``seed``.
    """
    ratios = _check_ratios(ratios)
    ordered = sorted(notes, key=lambda note: note.id)
    ids = [note.id for note in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("stratified_split needs unique note ids")
    vocabulary = sorted({label for note in ordered for label in note.labels})
    index = {label: position for position, label in enumerate(vocabulary)}
    doc_labels = [np.array(sorted({index[label] for label in note.labels}), dtype=np.int64) for note in ordered]
    state = _SplitState(doc_labels, len(vocabulary), part_sizes(len(ids), ratios), ratios, seed)
    state.assign_by_label()
    state.assign_unlabelled()
    state.repair()
    return {note_id: SPLITS[part] for note_id, part in zip(ids, state.assignment.tolist(), strict=True)}


class _SplitState:
    """Bookkeeping of one stratification run. Arrays are ``[parts, labels]`` unless noted."""

    def __init__(
        self, doc_labels: list[np.ndarray], n_labels: int, sizes: list[int], ratios: Sequence[float], seed: int
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.doc_labels = doc_labels
        self.label_docs: list[list[int]] = [[] for _ in range(n_labels)]
        for doc, labels in enumerate(doc_labels):
            for label in labels.tolist():
                self.label_docs[label].append(doc)
        self.totals = np.array([len(docs) for docs in self.label_docs], dtype=np.int64)  # [labels]
        self.remaining = self.totals.copy()  # [labels], documents not yet assigned
        self.capacity = np.array(sizes, dtype=np.int64)  # [parts]
        self.desired = np.outer(np.asarray(ratios, dtype=np.float64), self.totals.astype(np.float64))
        self.counts = np.zeros((len(sizes), n_labels), dtype=np.int32)
        self.assignment = np.full(len(doc_labels), -1, dtype=np.int64)  # [docs]
        self.open_parts = [part for part, size in enumerate(sizes) if size > 0]
        self.label_tiebreak = self.rng.permutation(n_labels)  # [labels]
        self.heap = [(int(self.totals[label]), int(self.label_tiebreak[label]), label) for label in range(n_labels)]
        heapq.heapify(self.heap)

    def place(self, doc: int, part: int) -> None:
        self.assignment[doc] = part
        self.capacity[part] -= 1
        for label in self.doc_labels[doc].tolist():
            self.desired[part, label] -= 1
            self.counts[part, label] += 1
            self.remaining[label] -= 1
            if self.remaining[label] > 0:
                heapq.heappush(self.heap, (int(self.remaining[label]), int(self.label_tiebreak[label]), label))

    def assign_by_label(self) -> None:
        """Sechidis' loop: take the label with the fewest unassigned documents and distribute them."""
        while self.heap:
            remaining, _, label = heapq.heappop(self.heap)
            if remaining != self.remaining[label] or remaining == 0:
                continue  # a stale heap entry; the label was re-pushed with its current count
            pool = [doc for doc in self.label_docs[label] if self.assignment[doc] < 0]
            pool = [pool[i] for i in self.rng.permutation(len(pool))]
            if self.totals[label] >= MIN_DOCS_PER_PART_LABEL:
                lacking = [p for p in self.open_parts if self.counts[p, label] == 0 and self.capacity[p] > 0]
                for part in sorted(lacking, key=lambda p: -self.desired[p, label]):
                    if pool:
                        self.place(pool.pop(), part)
            for doc in pool:
                self.place(doc, self._best_part(label))

    def _best_part(self, label: int) -> int:
        """The open part that most wants ``label``; then the emptiest part; then random."""
        candidates = [part for part in self.open_parts if self.capacity[part] > 0]
        noise = self.rng.random(len(candidates))
        keys = [(-self.desired[p, label], -self.capacity[p], noise[i]) for i, p in enumerate(candidates)]
        return candidates[min(range(len(candidates)), key=keys.__getitem__)]

    def assign_unlabelled(self) -> None:
        """Documents without labels fill the remaining capacity in random order."""
        for doc in self.rng.permutation(len(self.doc_labels)).tolist():
            if self.assignment[doc] < 0:
                self.place(doc, int(np.argmax(self.capacity)))

    def repair(self) -> None:
        """Swap documents so each label with enough documents reaches every part."""
        unfixed = 0
        for label in np.flatnonzero(self.totals >= MIN_DOCS_PER_PART_LABEL).tolist():
            for part in self.open_parts:
                if self.counts[part, label] == 0 and not self._swap_in(label, part):
                    unfixed += 1
        if unfixed:
            logger.warning("%d (label, part) pairs left without a document: the parts are too small", unfixed)

    def _swap_in(self, label: int, part: int) -> bool:
        """Move a document with ``label`` into ``part`` in exchange for one that can leave it."""
        receiver = next((doc for doc in self._members(part) if self._can_leave(doc, part)), None)
        if receiver is None:
            return False
        for donor in self.label_docs[label]:
            source = int(self.assignment[donor])
            if self.counts[source, label] >= 2 and self._can_leave(donor, source):
                self._move(donor, part)
                self._move(receiver, source)
                return True
        return False

    def _members(self, part: int) -> list[int]:
        return [int(doc) for doc in self.rng.permutation(np.flatnonzero(self.assignment == part))]

    def _can_leave(self, doc: int, part: int) -> bool:
        """True if ``part`` keeps every protected label of ``doc`` without it."""
        labels = self.doc_labels[doc]
        protected = labels[self.totals[labels] >= MIN_DOCS_PER_PART_LABEL]
        return bool(np.all(self.counts[part, protected] >= 2))

    def _move(self, doc: int, part: int) -> None:
        labels = self.doc_labels[doc]
        self.counts[self.assignment[doc], labels] -= 1
        self.counts[part, labels] += 1
        self.assignment[doc] = part


def apply_splits(
    notes: Sequence[Note],
    *,
    split_file: str | Path | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> list[Note]:
    """Return the notes with ``split`` set.

    A dataset's own split wins when every note has one. Otherwise the split is
    read from ``split_file`` when it exists (so a run can be repeated exactly),
    or computed with :func:`stratified_split` and saved to ``split_file``.
    The file is JSON: ``{"seed": .., "ratios": [..], "assignments": {id: split}}``.
    """
    if notes and all(note.split in SPLITS for note in notes):
        return list(notes)
    if any(note.split is not None for note in notes):
        logger.warning("only some notes have a split; assigning new splits to all %d notes", len(notes))
    if split_file is not None and Path(split_file).exists():
        assignments = _read_split_file(Path(split_file), notes)
    else:
        assignments = stratified_split(notes, ratios=ratios, seed=seed)
        if split_file is not None:
            record = {"seed": seed, "ratios": list(_check_ratios(ratios)), "assignments": assignments}
            atomic_write_json(split_file, record)
            logger.info("wrote splits of %d notes to %s", len(assignments), split_file)
    return [replace(note, split=assignments[note.id]) for note in notes]


def _read_split_file(path: Path, notes: Sequence[Note]) -> dict[str, str]:
    content: Any = read_json_file(path)
    if not isinstance(content, dict) or not isinstance(content.get("assignments"), dict):
        raise InputError('expected an object with an "assignments" object {note id: split}', path=path)
    assignments: dict[str, Any] = content["assignments"]
    for note_id, split in assignments.items():
        if split not in SPLITS:
            message = f"invalid split {split!r}; expected one of {', '.join(SPLITS)}"
            raise InputError(message, path=path, record=note_id, field="assignments")
    for note in notes:
        if note.id not in assignments:
            raise InputError("note id missing from the split file", path=path, record=note.id, field="assignments")
    unused = len(assignments) - len({note.id for note in notes})
    if unused:
        logger.warning("%s: %d assigned ids are not among the notes", path, unused)
    logger.info("read splits of %d notes from %s", len(notes), path)
    return assignments


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(ratio) for ratio in ratios)
    if len(values) != len(SPLITS) or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        message = f"split ratios must be 3 non-negative numbers (train, dev, test) summing to 1, got {ratios!r}"
        raise ConfigError(message)
    return values
