"""Deterministic synthetic clinical notes coded with ICD-10-CM.

The notes are the project's demo dataset and test fixture: they look like
real admission/clinic notes (sections, vitals, medications, a problem list),
their labels follow a long-tailed distribution with comorbidity clusters, and
every coded mention is recorded as a character span. Each note also carries
distractors that must *not* be coded (negated, family history, ruled out,
hypothetical), listed in ``meta["uncoded_mentions"]``, so a bag-of-words model
can learn the labels without reaching a perfect score.

All wording is our own (``synthetic_lexicon``); only official code titles are
read from simple-icd-10-cm at run time. Same config -> byte-identical notes:
one ``random.Random(seed)`` drives everything, in a fixed order.

The notes do not follow the ICD-10-CM coding guidelines to the letter (for
example hypertension and CKD are coded separately rather than as I12.x).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import Field, field_validator

from medcoder.data.icd import describe
from medcoder.data.records import SPLITS, Note, Span
from medcoder.data.sources.base import SourceConfig
from medcoder.data.synthetic_lexicon import (
    ACUTE_PLANS,
    ACUTE_SENTENCES,
    ALLERGIES,
    CHRONIC_PLANS,
    CLINIC_CLOSINGS,
    CLUSTERS,
    EXAM_NEGATED_SENTENCES,
    EXCLUSIVE_GROUPS,
    FAMILY_NONE,
    FAMILY_SENTENCES,
    FINDING_PLANS,
    FINDING_SENTENCES,
    GENERAL_MEDS,
    HOSPITAL_CLOSINGS,
    HPI_FILLERS,
    HYPOTHETICAL_SENTENCES,
    INVENTORY,
    NEGATED_SENTENCES,
    NORMAL_EXAM,
    NORMAL_SIGNS,
    RELATIVES,
    RULED_OUT_SENTENCES,
    SIGN_SHIFTS,
    SOCIAL_HISTORY,
    STATUS_PLANS,
    VISIT_REASONS,
    CodeEntry,
)
from medcoder.errors import ConfigError

UNCODED_REASONS = {"n": "negated", "f": "family_history", "r": "ruled_out", "h": "hypothetical"}
SECTION_HEADERS = (
    "CHIEF COMPLAINT",
    "HISTORY OF PRESENT ILLNESS",
    "PAST MEDICAL HISTORY",
    "FAMILY HISTORY",
    "MEDICATIONS",
    "PHYSICAL EXAM",
    "ASSESSMENT AND PLAN",
)
# How many codes a note gets (1..8); most notes carry 2-5.
_CODES_PER_NOTE_WEIGHTS = (10, 17, 20, 18, 13, 10, 7, 5)


class SyntheticSource(SourceConfig):
    """Knobs of the generator (:func:`medcoder.data.synthetic.generate_notes`); the defaults give the demo dataset.

    ``n_codes`` takes the head of the fixed inventory (common codes first);
    ``zipf_exponent`` sets how steeply code frequency falls along it. The
    generator gives every note its own split (``split_ratios``). The ``*_rate``
    fields are per-note probabilities of one such sentence (negation and family
    history may occur twice). Same config, byte-identical notes.
    """

    kind: Literal["synthetic"] = "synthetic"
    n_notes: int = Field(600, ge=1)
    n_codes: int = Field(60, ge=1, le=len(INVENTORY))
    seed: int = 0
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    zipf_exponent: float = Field(1.1, ge=0.0)
    cluster_rate: float = Field(0.75, ge=0.0, le=1.0)
    negation_rate: float = Field(0.6, ge=0.0, le=1.0)
    family_history_rate: float = Field(0.5, ge=0.0, le=1.0)
    ruled_out_rate: float = Field(0.2, ge=0.0, le=1.0)
    hypothetical_rate: float = Field(0.25, ge=0.0, le=1.0)
    title_rate: float = Field(0.1, ge=0.0, le=1.0)
    med_rate: float = Field(0.75, ge=0.0, le=1.0)
    decoy_med_rate: float = Field(0.2, ge=0.0, le=1.0)

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or abs(sum(value) - 1) > 1e-6:
            raise ValueError("split_ratios must be three non-negative numbers summing to 1")
        return value

    def read(self) -> list[Note]:
        return generate_notes(self)


def code_inventory(n_codes: int) -> list[str]:
    """The first ``n_codes`` codes of the fixed inventory, most common first."""
    if not 1 <= n_codes <= len(INVENTORY):
        raise ConfigError(f"n_codes must be in 1..{len(INVENTORY)}, got {n_codes}")
    return [entry.code for entry in INVENTORY[:n_codes]]


def surface_forms(code: str) -> tuple[str, ...]:
    """The hand-written ways ``code`` is mentioned in the notes (without its title)."""
    for entry in INVENTORY:
        if entry.code == code:
            return entry.forms
    raise KeyError(code)


@cache
def code_title(code: str) -> str:
    """Official ICD-10-CM title of ``code``."""
    title = describe(code, "icd10cm")
    if title is None:
        raise ValueError(f"{code} is not in the ICD-10-CM catalog")
    return title


@dataclass(frozen=True)
class _Catalog:
    """The inventory cut to ``n_codes``, with sampling weights and conflicts."""

    entries: tuple[CodeEntry, ...]
    by_code: dict[str, CodeEntry]
    weights: dict[str, float]
    conflicts: dict[str, tuple[str, ...]]
    clusters: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def build(cls, config: SyntheticSource) -> _Catalog:
        entries = INVENTORY[: config.n_codes]
        by_code = {entry.code: entry for entry in entries}
        weights = {code: 1.0 / (rank + 1) ** config.zipf_exponent for rank, code in enumerate(by_code)}
        conflicts = {
            code: tuple(
                other
                for group in EXCLUSIVE_GROUPS
                if code in group
                for other in group
                if other != code and other in by_code
            )
            for code in by_code
        }
        clusters = tuple(
            (name, kept)
            for name, members in CLUSTERS
            if len(kept := tuple(code for code in members if code in by_code)) >= 2
        )
        return cls(entries, by_code, weights, conflicts, clusters)


def _weighted_choice(rng: random.Random, items: Sequence[str], weights: dict[str, float]) -> str:
    return rng.choices(items, weights=[weights[item] for item in items])[0]


class _TextBuilder:
    """Appends text while recording the character span of every mention."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.spans: list[Span] = []
        self.uncoded: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._length += len(text)

    def mention(self, form: str, code: str, reason: str | None = None) -> None:
        start = self._length
        self.add(form)
        if reason is None:
            self.spans.append(Span(start, self._length, code))
        else:
            self.uncoded.append({"start": start, "end": self._length, "code": code, "reason": reason})

    def sentence(self, template: str, form: str, code: str, reason: str | None = None, **fields: str) -> None:
        """Write ``template`` (one ``{x}`` slot for the mention, other slots from ``fields``)."""
        before, after = template.split("{x}")
        self.add(before.format(**fields))
        self.mention(form, code, reason)
        self.add(after.format(**fields))

    def mention_list(self, items: Sequence[tuple[str, str]]) -> None:
        """Write ``a, b and c`` with each ``(form, code)`` recorded as a coded mention."""
        for index, (form, code) in enumerate(items):
            if index:
                self.add(" and " if index == len(items) - 1 else ", ")
            self.mention(form, code)

    def text(self) -> str:
        return "".join(self._parts)


@dataclass
class _Patient:
    """What is decided about one note before its text is written."""

    age: int
    sex: str
    cluster: str | None = None
    codes: list[CodeEntry] = field(default_factory=list)
    # gold codes, codes that conflict with them, and codes already used as distractors
    blocked: set[str] = field(default_factory=set)

    @property
    def fields(self) -> dict[str, str]:
        he, his, man = ("she", "her", "woman") if self.sex == "F" else ("he", "his", "man")
        return {"he": he, "He": he.capitalize(), "his": his, "man": man, "age": str(self.age)}

    def of_kind(self, kind: str) -> list[CodeEntry]:
        return [entry for entry in self.codes if entry.kind == kind]


def _draw_patient(rng: random.Random, catalog: _Catalog, config: SyntheticSource) -> _Patient:
    """Sex, age and the gold codes: usually a comorbidity cluster, then Zipf-weighted extras."""
    patient = _Patient(sex=rng.choice(("F", "M")), age=rng.randint(22, 92))
    n_codes = min(rng.choices(range(1, 9), weights=_CODES_PER_NOTE_WEIGHTS)[0], len(catalog.entries))

    def take_one_of(codes: Sequence[str]) -> None:
        candidates = [c for c in codes if c not in patient.blocked and catalog.by_code[c].sex in (None, patient.sex)]
        if candidates:
            code = _weighted_choice(rng, candidates, catalog.weights)
            patient.codes.append(catalog.by_code[code])
            patient.blocked.update((code, *catalog.conflicts[code]))

    if catalog.clusters and rng.random() < config.cluster_rate:
        # Square root: big clusters of common codes lead, without drowning the small ones.
        cluster_weights = [sum(catalog.weights[c] for c in members) ** 0.5 for _, members in catalog.clusters]
        patient.cluster, members = rng.choices(catalog.clusters, weights=cluster_weights)[0]
        for _ in range(min(n_codes, rng.randint(1, 3))):
            take_one_of(members)
    for _ in range(n_codes - len(patient.codes)):
        take_one_of(list(catalog.by_code))
    return patient


def _count(rng: random.Random, rate: float, repeats: int) -> int:
    """How many of up to ``repeats`` sentences to write; each extra one half as likely."""
    return sum(rng.random() < rate / (2**i) for i in range(repeats))


class _NoteWriter:
    """Writes one note section by section; every draw comes from ``rng``, in a fixed order."""

    def __init__(self, rng: random.Random, catalog: _Catalog, config: SyntheticSource, patient: _Patient) -> None:
        self.rng, self.catalog, self.config, self.patient = rng, catalog, config, patient
        self.b = _TextBuilder()
        self.fields = patient.fields
        self.acute, self.chronic = patient.of_kind("acute"), patient.of_kind("chronic")
        self.status, self.findings = patient.of_kind("status"), patient.of_kind("finding")

    def write(self) -> _TextBuilder:
        self._history()
        self._background()
        meds = self._medications()
        self._exam_and_results()
        self._assessment(meds)
        return self.b

    def _form(self, entry: CodeEntry) -> str:
        return self.rng.choice(entry.forms)

    def _history(self) -> None:
        rng, b, f = self.rng, self.b, self.fields
        complaint = rng.choice(self.acute[0].complaints) if self.acute else rng.choice(VISIT_REASONS)
        b.add(f"CHIEF COMPLAINT:\n{complaint[0].upper()}{complaint[1:]}.\n\n")
        b.add(f"HISTORY OF PRESENT ILLNESS:\n{f['age']}-year-old {f['man']} with ")
        if self.chronic:
            b.add("a history of ")
            b.mention_list([(self._form(e), e.code) for e in self.chronic])
        else:
            b.add("no significant chronic medical problems")
        b.add(f" who presents with {complaint}." if self.acute else f" who presents for {complaint}.")
        templates = rng.sample(ACUTE_SENTENCES, len(ACUTE_SENTENCES))
        for index, entry in enumerate(self.acute):
            b.add(" ")
            b.sentence(templates[index % len(templates)], self._form(entry), entry.code, **f)
        for filler in rng.sample(HPI_FILLERS, rng.randint(2, 4)):
            b.add(" " + filler.format(**f))
        self._distractors("n", _count(rng, self.config.negation_rate, 2), lead=" ")

    def _background(self) -> None:
        rng, b = self.rng, self.b
        b.add("\n\nPAST MEDICAL HISTORY:\n")
        for entry in self.chronic + self.status:
            b.add("- ")
            b.mention(self._form(entry), entry.code)
            b.add("\n")
        if not self.chronic + self.status:
            b.add("No significant past medical history.\n")
        b.add("\nFAMILY HISTORY:\n")
        if not self._distractors("f", _count(rng, self.config.family_history_rate, 2)):
            b.add(rng.choice(FAMILY_NONE))
        social = " ".join(rng.choice(group).format(**self.fields) for group in SOCIAL_HISTORY)
        b.add(f"\n\nSOCIAL HISTORY:\n{social}\n\n")

    def _medications(self) -> list[str]:
        rng, config, patient = self.rng, self.config, self.patient
        meds = [rng.choice(e.meds) for e in patient.codes if e.meds and rng.random() < config.med_rate]
        if rng.random() < config.decoy_med_rate:
            # A drug for an absent condition keeps medications a weak cue rather than a giveaway.
            others = [
                e for e in self.catalog.entries if e.meds and e not in patient.codes and e.sex in (None, patient.sex)
            ]
            meds += [rng.choice(rng.choice(others).meds)] if others else []
        if rng.random() < 0.3:
            meds.append(rng.choice(GENERAL_MEDS))
        # One dose per drug: two codes may suggest the same drug at different doses.
        by_drug: dict[str, str] = {}
        for med in meds:
            by_drug.setdefault(med.split()[0], med)
        listed = list(by_drug.values())
        self.b.add("MEDICATIONS:\n" + ("".join(f"- {med}\n" for med in listed) if listed else "None.\n"))
        self.b.add(f"\nALLERGIES:\n{rng.choice(ALLERGIES)}\n\n")
        return listed

    def _exam_and_results(self) -> None:
        rng, b = self.rng, self.b
        ranges = dict(NORMAL_SIGNS)
        for entry in reversed(self.patient.codes):  # reversed: the first code that shifts a value wins
            ranges.update(SIGN_SHIFTS.get(entry.code, {}))
        v = {name: rng.uniform(low, high) for name, (low, high) in ranges.items()}
        b.add(
            f"PHYSICAL EXAM:\nVitals: T {v['temp']:.1f} F, HR {v['hr']:.0f}, BP {v['sbp']:.0f}/{v['dbp']:.0f}, "
            f"RR {v['rr']:.0f}, SpO2 {v['spo2']:.0f}% on room air, BMI {v['bmi']:.1f}.\n"
        )
        abnormal = {e.exam[0]: e.exam[1] for e in reversed(self.patient.codes) if e.exam}
        for system, normal in NORMAL_EXAM:
            b.add(f"{system}: {abnormal.get(system, rng.choice(normal))}.\n")
        if rng.random() < 0.5 and self._distractors("n", 1, on_exam=True):
            b.add("\n")
        b.add(
            f"\nPERTINENT RESULTS:\nNa {v['na']:.0f}, K {v['k']:.1f}, Cr {v['cr']:.2f}, glucose {v['glucose']:.0f}, "
            f"WBC {v['wbc']:.1f}, Hgb {v['hgb']:.1f}, Plt {v['plt']:.0f}."
        )
        for entry in self.findings:
            b.add(" ")
            b.sentence(rng.choice(FINDING_SENTENCES), self._form(entry), entry.code, **self.fields)

    def _assessment(self, listed_meds: list[str]) -> None:
        rng, b = self.rng, self.b
        b.add("\n\nASSESSMENT AND PLAN:\n")
        for number, entry in enumerate(self.acute + self.findings + self.chronic + self.status, start=1):
            b.add(f"{number}. ")
            use_title = rng.random() < self.config.title_rate
            b.mention(code_title(entry.code) if use_title else self._form(entry), entry.code)
            plans = {"acute": ACUTE_PLANS, "finding": FINDING_PLANS, "status": STATUS_PLANS}
            plan = rng.choice(plans.get(entry.kind, CHRONIC_PLANS))
            own_meds = [med for med in entry.meds if med in listed_meds]
            if own_meds and rng.random() < 0.7:
                plan = f"{'Start' if entry.kind == 'acute' else 'Continue'} {rng.choice(own_meds)}. {plan}"
            b.add(f": {plan}\n")
        for letter, rate in (("r", self.config.ruled_out_rate), ("h", self.config.hypothetical_rate)):
            if self._distractors(letter, _count(rng, rate, 1)):
                b.add("\n")
        closings = HOSPITAL_CLOSINGS if self.acute else CLINIC_CLOSINGS
        b.add(rng.choice(closings).format(n=rng.randint(2, 6)) + "\n")

    def _distractors(self, letter: str, count: int, lead: str = "", on_exam: bool = False) -> int:
        """Write up to ``count`` uncoded sentences of one kind, ``lead`` before the first; return how many.

        Each names a code the note does not carry (nor conflicts with) and that
        reads naturally in this context; ``on_exam`` keeps to bedside findings.
        """
        rng, patient = self.rng, self.patient
        kinds = ("acute", "finding") if on_exam else ("chronic", "status", "acute", "finding")
        templates = {
            "n": EXAM_NEGATED_SENTENCES if on_exam else NEGATED_SENTENCES,
            "r": RULED_OUT_SENTENCES,
            "h": HYPOTHETICAL_SENTENCES,
            "f": FAMILY_SENTENCES,
        }[letter]
        for written in range(count):
            candidates = [
                e.code
                for e in self.catalog.entries
                if letter in e.uncoded
                and e.kind in kinds
                and e.code not in patient.blocked
                and (letter == "f" or e.sex in (None, patient.sex))
            ]
            if not candidates:
                return written
            entry = self.catalog.by_code[_weighted_choice(rng, candidates, self.catalog.weights)]
            patient.blocked.add(entry.code)  # name each distractor once per note
            fields = dict(self.fields)
            if letter == "f":
                fields.update(
                    Relative=rng.choice(RELATIVES[entry.sex or rng.choice(("F", "M"))]), n=str(rng.randint(40, 80))
                )
            self.b.add(" " if written else lead)
            self.b.sentence(rng.choice(templates), self._form(entry), entry.code, UNCODED_REASONS[letter], **fields)
        return count


def _assign_splits(rng: random.Random, labels: list[tuple[str, ...]], ratios: tuple[float, float, float]) -> list[str]:
    """A seeded shuffle cut by ``ratios``, then swaps so every code seen >= 3 times is in train.

    A swap moves a train note out only when each of its codes keeps another
    train note (or is too rare to need one), so repairs never undo each other.
    """
    n = len(labels)
    order = list(range(n))
    rng.shuffle(order)
    n_train, n_dev = round(ratios[0] * n), round(ratios[1] * n)
    split = [""] * n
    for rank, index in enumerate(order):
        split[index] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_dev else SPLITS[2]
    total = Counter(code for codes in labels for code in codes)
    in_train = Counter(code for codes, s in zip(labels, split, strict=True) if s == "train" for code in codes)
    for code in total:
        if total[code] < 3 or in_train[code]:
            continue
        incoming = next(i for i in order if code in labels[i])
        outgoing = next(
            (i for i in order if split[i] == "train" and all(in_train[c] >= 2 or total[c] < 3 for c in labels[i])),
            None,
        )
        if outgoing is None:
            continue
        split[incoming], split[outgoing] = split[outgoing], split[incoming]
        in_train.subtract(labels[outgoing])
        in_train.update(labels[incoming])
    return split


def generate_notes(config: SyntheticSource | None = None) -> list[Note]:
    """Generate ``config.n_notes`` coded notes with ids ``synth-00001``... (default config: the demo dataset).

    ``labels`` are in order of first mention; ``spans`` hold every coded
    mention; ``meta["uncoded_mentions"]`` lists the distractors as dicts
    ``{"start", "end", "code", "reason"}``; ``meta["cluster"]`` names the
    comorbidity cluster the note was built around (or ``None``).
    """
    config = config or SyntheticSource()
    rng = random.Random(config.seed)
    catalog = _Catalog.build(config)
    drafts = []
    for _ in range(config.n_notes):
        patient = _draw_patient(rng, catalog, config)
        builder = _NoteWriter(rng, catalog, config, patient).write()
        labels = tuple(dict.fromkeys(span.label for span in builder.spans))
        drafts.append((builder, labels, patient.cluster))
    splits = _assign_splits(rng, [labels for _, labels, _ in drafts], config.split_ratios)
    return [
        Note(
            id=f"synth-{number:05d}",
            text=builder.text(),
            labels=labels,
            split=split,
            spans=tuple(builder.spans),
            meta={"uncoded_mentions": builder.uncoded, "cluster": cluster},
        )
        for number, ((builder, labels, cluster), split) in enumerate(zip(drafts, splits, strict=True), start=1)
    ]
