"""Synthetic notes: determinism, span integrity, distractors, label distribution, learnability."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import simple_icd_10_cm as cm

from medcoder.config import validate
from medcoder.data.records import Note, check_notes
from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.data.synthetic import (
    SECTION_HEADERS,
    code_inventory,
    code_title,
    generate_notes,
    surface_forms,
)
from medcoder.data.synthetic_lexicon import EXCLUSIVE_GROUPS, INVENTORY
from medcoder.errors import ConfigError

ALL_CODES = code_inventory(len(INVENTORY))


@pytest.fixture(scope="module")
def notes() -> list[Note]:
    return generate_notes(SyntheticSource())


def _section(text: str, header: str) -> tuple[int, int]:
    """Character range of one section's body: from after its header to the next blank line."""
    start = text.index(header + ":\n") + len(header) + 2
    end = text.find("\n\n", start)
    return start, len(text) if end < 0 else end


def test_same_config_gives_byte_identical_notes_and_another_seed_differs() -> None:
    config = SyntheticSource(n_notes=60, seed=7)
    first, second = generate_notes(config), generate_notes(config)
    assert first == second
    assert [n.meta for n in first] == [n.meta for n in second]
    other = generate_notes(SyntheticSource(n_notes=60, seed=8))
    assert sum(a.text != b.text for a, b in zip(first, other, strict=True)) > 50


def test_every_span_is_a_surface_form_of_a_gold_label(notes: list[Note]) -> None:
    check_notes(notes, source="synthetic")
    for note in notes:
        assert note.spans
        for span in note.spans:
            assert span.label in note.labels
            assert note.text[span.start : span.end] in (*surface_forms(span.label), code_title(span.label))
        assert {span.label for span in note.spans} == set(note.labels)
        # labels follow the order of first mention, as readers of real files produce them
        first = {label: min(s.start for s in note.spans if s.label == label) for label in note.labels}
        assert list(note.labels) == sorted(note.labels, key=first.__getitem__)


def test_uncoded_mentions_are_real_text_outside_the_labels(notes: list[Note]) -> None:
    cues = {
        "negated": (
            "denies ",
            "No evidence of ",
            "Negative for ",
            "No signs of ",
            "has no known ",
            "No prior ",
            "No clinical signs of ",
            "not suggestive of ",
        ),
        "ruled_out": ("ruled out",),
        "hypothetical": ("develops", "warning signs of ", "including for "),
    }
    reasons: Counter[str] = Counter()
    for note in notes:
        family = _section(note.text, "FAMILY HISTORY")
        for mention in note.meta["uncoded_mentions"]:
            start, end, code, reason = mention["start"], mention["end"], mention["code"], mention["reason"]
            reasons[reason] += 1
            assert code not in note.labels
            assert note.text[start:end] in surface_forms(code)
            sentence_start = note.text.rfind(".", 0, start) + 1
            sentence = note.text[sentence_start : note.text.index(".", end) + 1]
            if reason == "family_history":
                assert family[0] <= start < end <= family[1]
            else:
                assert any(cue in sentence for cue in cues[reason]), sentence
    assert set(reasons) == {"negated", "family_history", "ruled_out", "hypothetical"}
    assert reasons["negated"] > 300 and reasons["family_history"] > 150 and reasons["ruled_out"] > 40


def test_negated_condition_is_not_a_gold_label(notes: list[Note]) -> None:
    negated = [(n, m) for n in notes for m in n.meta["uncoded_mentions"] if m["reason"] == "negated"]
    denied = [(n, m) for n, m in negated if n.text[: m["start"]].endswith("denies ")]
    assert denied
    for note, mention in denied:
        assert mention["code"] not in note.labels
        assert all(span.label != mention["code"] for span in note.spans)


def test_every_mention_of_a_condition_is_recorded(notes: list[Note]) -> None:
    """No template or medication names a condition by accident: each occurrence of any
    surface form lies inside a coded span or an uncoded mention."""
    forms = {form.lower() for entry in INVENTORY for form in entry.forms}
    for note in notes:
        recorded = [(s.start, s.end) for s in note.spans]
        recorded += [(m["start"], m["end"]) for m in note.meta["uncoded_mentions"]]
        text = note.text.lower()
        for form in forms:
            start = text.find(form)
            while start >= 0:
                end = start + len(form)
                whole_word = not (start and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum())
                assert not whole_word or any(a <= start and end <= b for a, b in recorded), (note.id, form)
                start = text.find(form, start + 1)


def test_inventory_is_valid_billable_icd10cm_with_distinct_surface_forms() -> None:
    assert 80 <= len(ALL_CODES) <= 120
    assert len(set(ALL_CODES)) == len(ALL_CODES)
    owner: dict[str, str] = {}
    for code in ALL_CODES:
        assert cm.is_valid_item(code) and cm.is_leaf(code), code
        assert 2 <= len(surface_forms(code)) <= 4, code
        for form in (*surface_forms(code), code_title(code)):
            assert owner.setdefault(form.lower(), code) == code, (form, code, owner[form.lower()])
    for code in ("I10", "E11.9", "I50.9", "I48.91", "J44.9", "J18.9", "N39.0", "A41.9", "F32.A", "M54.50"):
        assert code in code_inventory(60)
    assert code_inventory(10) == ALL_CODES[:10]
    with pytest.raises(ConfigError):
        code_inventory(0)
    with pytest.raises(ConfigError):
        code_inventory(len(ALL_CODES) + 1)


def test_code_frequency_is_long_tailed(notes: list[Note]) -> None:
    counts = Counter(label for note in notes for label in note.labels)
    inventory = code_inventory(SyntheticSource().n_codes)
    assert set(counts) <= set(inventory)
    assert max(counts.values()) > 0.2 * len(notes)
    rare = [code for code in inventory if counts[code] < 0.03 * len(notes)]
    assert len(rare) >= 0.25 * len(inventory)


def test_labels_per_note_length_and_sections(notes: list[Note]) -> None:
    for note in notes:
        assert 1 <= len(note.labels) <= 8
        assert len(set(note.labels)) == len(note.labels)
        assert 120 <= len(note.text.split()) <= 600
        positions = [note.text.index(header + ":\n") for header in SECTION_HEADERS]
        assert positions == sorted(positions)
    assert re.fullmatch(r"synth-\d{5}", notes[0].id) and notes[0].id == "synth-00001"
    lengths = [len(note.text.split()) for note in notes]
    assert 180 <= float(np.median(lengths)) <= 400


def test_exclusive_codes_never_co_occur_and_sex_specific_codes_match(notes: list[Note]) -> None:
    for note in notes:
        for group in EXCLUSIVE_GROUPS:
            assert sum(code in note.labels for code in group) <= 1, (note.id, group)
        if "N40.0" in note.labels:
            assert "-year-old man" in note.text
        if "C50.919" in note.labels:
            assert "-year-old woman" in note.text


def test_splits_follow_ratios_and_train_covers_recurring_codes(notes: list[Note]) -> None:
    sizes = Counter(note.split for note in notes)
    for split, ratio in zip(("train", "dev", "test"), SyntheticSource().split_ratios, strict=True):
        assert abs(sizes[split] - ratio * len(notes)) <= 2
    counts = Counter(label for note in notes for label in note.labels)
    in_train = {label for note in notes if note.split == "train" for label in note.labels}
    assert {code for code, n in counts.items() if n >= 3} <= in_train


def test_small_inventory_and_bad_configs() -> None:
    small = generate_notes(SyntheticSource(n_notes=30, n_codes=5, seed=3))
    assert {label for note in small for label in note.labels} <= set(code_inventory(5))
    assert all(1 <= len(note.labels) <= 5 for note in small)
    for bad in (
        {"n_notes": 0},
        {"n_codes": 0},
        {"n_codes": 500},
        {"split_ratios": (0.5, 0.5, 0.5)},
        {"negation_rate": 1.5},
    ):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=f"synthetic.yaml: {key}"):
            validate(SyntheticSource, bad, source="synthetic.yaml")


def test_tfidf_logistic_regression_learns_but_does_not_ace_the_labels(notes: list[Note]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier

    train = [n for n in notes if n.split == "train"]
    test = [n for n in notes if n.split == "test"]
    codes = sorted({label for note in train for label in note.labels})
    column = {code: i for i, code in enumerate(codes)}

    def label_matrix(split: list[Note]) -> np.ndarray:
        # int32, not int8: sklearn 1.9.1 scrambles OneVsRest columns for int8 targets.
        y = np.zeros((len(split), len(codes)), dtype=np.int32)
        for row, note in enumerate(split):
            for label in note.labels:
                if label in column:
                    y[row, column[label]] = 1
        return y

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    model = OneVsRestClassifier(LogisticRegression(C=30.0, solver="liblinear"))
    model.fit(vectorizer.fit_transform([n.text for n in train]), label_matrix(train))
    predicted = model.predict(vectorizer.transform([n.text for n in test]))
    micro_f1 = f1_score(label_matrix(test), predicted, average="micro")
    assert 0.6 < micro_f1 < 0.97
