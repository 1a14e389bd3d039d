"""Tests for medcoder.data.splits: iterative stratification and split files."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from medcoder.data.records import Note
from medcoder.data.splits import apply_splits, part_sizes, stratified_split
from medcoder.errors import ConfigError, InputError


def long_tailed_notes(n: int = 1000, n_labels: int = 200, seed: int = 7) -> list[Note]:
    """Multi-label notes whose label frequencies follow a Zipf-like long tail."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_labels + 1) ** 1.1
    weights /= weights.sum()
    notes = []
    for i in range(n):
        size = int(min(n_labels, max(1, rng.poisson(3))))
        labels = rng.choice(n_labels, size=size, replace=False, p=weights)
        notes.append(Note(id=f"doc{i:04d}", text="text", labels=tuple(f"L{j:03d}" for j in labels)))
    return notes


def label_parts(notes: list[Note], assignment: dict[str, str]) -> tuple[Counter[str], dict[str, set[str]]]:
    totals: Counter[str] = Counter()
    parts: dict[str, set[str]] = defaultdict(set)
    for note in notes:
        for label in note.labels:
            totals[label] += 1
            parts[label].add(assignment[note.id])
    return totals, parts


def test_part_sizes_use_largest_remainder() -> None:
    assert part_sizes(1000, (0.7, 0.1, 0.2)) == [700, 100, 200]
    assert part_sizes(11, (0.7, 0.1, 0.2)) == [8, 1, 2]  # 7.7, 1.1, 2.2 -> the .7 gets the spare
    assert part_sizes(10, (0.8, 0.2, 0.0)) == [8, 2, 0]
    assert sum(part_sizes(997, (0.6, 0.2, 0.2))) == 997


def test_sizes_match_ratios_exactly() -> None:
    notes = long_tailed_notes()
    assignment = stratified_split(notes, ratios=(0.7, 0.1, 0.2), seed=0)
    assert set(assignment) == {note.id for note in notes}
    assert Counter(assignment.values()) == {"train": 700, "dev": 100, "test": 200}


def test_every_label_with_three_documents_reaches_every_part() -> None:
    notes = long_tailed_notes()
    totals, parts = label_parts(notes, stratified_split(notes, seed=0))
    frequent = [label for label, total in totals.items() if total >= 3]
    assert len(frequent) > 100  # the fixture really has a long tail to cover
    assert any(total < 10 for total in totals.values())
    assert [label for label in frequent if parts[label] != {"train", "dev", "test"}] == []


def test_three_document_label_is_spread_over_all_parts() -> None:
    # Plain Sechidis would put these three documents in train, train, test.
    notes = [Note(id=f"r{i}", text="t", labels=("rare",)) for i in range(3)]
    notes += [Note(id=f"c{i:02d}", text="t", labels=("common",)) for i in range(17)]
    assignment = stratified_split(notes, seed=0)
    assert sorted(assignment[f"r{i}"] for i in range(3)) == ["dev", "test", "train"]
    assert Counter(assignment.values()) == {"train": 14, "dev": 2, "test": 4}


def test_stratification_keeps_label_proportions() -> None:
    notes = long_tailed_notes(n=2000, n_labels=100)
    assignment = stratified_split(notes, seed=1)
    totals: Counter[str] = Counter()
    in_test: Counter[str] = Counter()
    for note in notes:
        for label in note.labels:
            totals[label] += 1
            in_test[label] += assignment[note.id] == "test"
    frequent = [label for label, total in totals.items() if total >= 100]
    deviations = [abs(in_test[label] / totals[label] - 0.2) for label in frequent]
    assert max(deviations) < 0.05


def test_deterministic_for_a_seed_and_independent_of_order() -> None:
    notes = long_tailed_notes(n=300)
    first = stratified_split(notes, seed=5)
    assert stratified_split(notes, seed=5) == first
    assert stratified_split(list(reversed(notes)), seed=5) == first
    assert stratified_split(notes, seed=6) != first


def test_single_label_and_unlabelled_notes() -> None:
    notes = [Note(id=f"n{i:03d}", text="t", labels=(("a", "b", "c")[i % 3],)) for i in range(90)]
    notes += [Note(id=f"u{i}", text="t") for i in range(10)]
    assignment = stratified_split(notes, ratios=(0.6, 0.2, 0.2), seed=0)
    assert Counter(assignment.values()) == {"train": 60, "dev": 20, "test": 20}
    for label in "abc":
        counts = Counter(assignment[n.id] for n in notes if n.labels == (label,))
        assert counts == {"train": 18, "dev": 6, "test": 6}


def test_bad_ratios_are_config_errors() -> None:
    notes = long_tailed_notes(n=20)
    with pytest.raises(ConfigError, match="summing to 1"):
        stratified_split(notes, ratios=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="3 non-negative"):
        stratified_split(notes, ratios=(0.9, 0.1))


def test_dataset_split_is_kept() -> None:
    notes = [Note(id=str(i), text="t", labels=("a",), split=("train", "dev", "test")[i % 3]) for i in range(9)]
    assert [note.split for note in apply_splits(notes, seed=3)] == [note.split for note in notes]


def test_split_file_round_trip(tmp_path: Path) -> None:
    notes = long_tailed_notes(n=200)
    split_file = tmp_path / "splits" / "splits.json"
    first = apply_splits(notes, split_file=split_file, seed=4)
    saved = json.loads(split_file.read_text(encoding="utf-8"))
    assert saved["seed"] == 4
    assert saved["ratios"] == [0.7, 0.1, 0.2]
    assert saved["assignments"] == {note.id: note.split for note in first}
    assert first[0].labels == notes[0].labels and notes[0].split is None  # new objects; inputs untouched
    # The file wins over a different seed, so a run can be repeated exactly.
    again = apply_splits(notes, split_file=split_file, seed=99)
    assert [note.split for note in again] == [note.split for note in first]
    assert [note.split for note in apply_splits(notes, seed=99)] != [note.split for note in first]


def test_split_file_missing_id_names_file_and_id(tmp_path: Path) -> None:
    notes = long_tailed_notes(n=30)
    split_file = tmp_path / "splits.json"
    apply_splits(notes, split_file=split_file)
    extra = notes + [Note(id="newcomer", text="t", labels=("L000",))]
    with pytest.raises(InputError) as info:
        apply_splits(extra, split_file=split_file)
    assert str(split_file) in str(info.value) and "'newcomer'" in str(info.value)
    assert "missing" in str(info.value)


def test_split_file_invalid_split_names_file_and_id(tmp_path: Path) -> None:
    notes = long_tailed_notes(n=30)
    split_file = tmp_path / "splits.json"
    content = {"seed": 0, "ratios": [0.7, 0.1, 0.2], "assignments": {n.id: "train" for n in notes}}
    content["assignments"]["doc0007"] = "validation"
    split_file.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(InputError) as info:
        apply_splits(notes, split_file=split_file)
    message = str(info.value)
    assert str(split_file) in message and "'doc0007'" in message and "'validation'" in message


def test_corrupted_split_file(tmp_path: Path) -> None:
    notes = long_tailed_notes(n=30)
    split_file = tmp_path / "splits.json"
    split_file.write_text('{"seed": 0, "assignments": {"doc0000": "train",\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"splits\.json:2: malformed JSON"):
        apply_splits(notes, split_file=split_file)
    split_file.write_text('["doc0000", "train"]', encoding="utf-8")
    with pytest.raises(InputError, match=r"splits\.json: expected an object"):
        apply_splits(notes, split_file=split_file)
