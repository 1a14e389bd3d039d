"""Synthetic corpora at MIMIC size: thousands of ICD-10-CM codes, long notes, streamed.

The demo generator (:mod:`medcoder.data.synthetic`) writes realistic notes
over a hand-written inventory of about a hundred codes. This one scales: it
draws ``n_codes`` leaf codes of the ICD-10-CM catalog, gives them a Zipf
(long-tailed) frequency, and writes long notes (``words_per_note``, about
1,500 like a MIMIC discharge summary) carrying ``codes_per_note`` codes each
(about 15). A coded condition is mentioned by (a shuffled, thinned form of) its
catalog title behind a lead phrase ("assessed as", "history of"); the rest of
the note is filler drawn from a Zipf vocabulary of common clinical words and
invented tail words (MIMIC's vocabulary is large: ~120k distinct unigrams),
and a few conditions are mentioned negated ("no evidence of ...") and must not
be coded. Codes co-occur as diagnoses do: they fall into comorbidity topics of
about 50 codes, and a note draws most of its codes from three topics. Codes share title words ("Type 2 diabetes mellitus with ..."), so a
bag-of-words model learns them without a perfect score, and the rare codes are
as hard as MIMIC's.

Note ``i`` depends only on ``(seed, i)`` (its own ``numpy`` generator), so a
corpus streams note by note in bounded memory, any slice can be generated
alone, and the same config gives byte-identical notes. Splits are contiguous:
the first ``n_train`` notes are train, then dev, then test.

Shapes (:data:`SHAPES`) match the two benchmarks: MIMIC-III full (47,723 /
1,631 / 3,372 admissions, 8,922 codes, ~15.9 codes a note) and MIMIC-IV
ICD-10 (122,279 notes, ~7,900 codes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from medcoder.data.icd import catalog_entries
from medcoder.data.records import Note
from medcoder.data.sources.base import SourceConfig

# (train, dev, test, n_codes) of each benchmark's usual split
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "mimic3-full": (47_723, 1_631, 3_372, 8_922),
    "mimic4-icd10": (110_442, 3_966, 7_871, 7_942),
}

# The head of the filler vocabulary, most frequent first: common words of clinical notes.
_COMMON = (
    "the of and to was with in a for on is patient at no he she be as by this had were pain which normal "
    "or his her left right history day noted not given blood daily discharge admission hospital mg tablet "
    "continued without status present seen also there after prior showed over unit follow up team plan "
    "stable exam chest improved found medical course well intact consulted treatment started likely two "
    "ct pressure heart ordered iv cardiology saturation oxygen room air bilateral lower upper extremity "
    "review systems denies fevers chills nausea vomiting diarrhea headache sodium potassium chloride "
    "creatinine glucose hemoglobin platelets count culture negative positive repeat home medications "
    "physical vital signs afebrile alert oriented soft nontender distended regular rate rhythm murmurs "
    "clear auscultation sounds reflexes gait labs imaging impression recommend monitoring dose taper "
    "increased decreased evening morning night overnight floor icu transferred emergency department"
).split()
_SYLLABLES = (
    "ka lo mi ne ra tu vi sa po de fe gi ha ju ko le mo nu pa qui re si ta ve wo xa yo ze bra cle dro "
    "fla gri pro stu tri vel mar ton len sil dar cor pen tal rin gos bel hex lum nor ost pul ven"
).split()
_LEADS = ("assessed as", "history of", "known", "treated for", "consistent with", "diagnosis:", "with", "noted")
_NEGATIONS = ("no evidence of", "denies", "ruled out", "negative for")
_WORDS_PER_SENTENCE = 14
# Comorbidity: codes fall into topics of ~50; a note draws most of its codes from 3 topics.
_CODES_PER_TOPIC = 50
_TOPICS_PER_NOTE = 3
_IN_TOPIC = 0.8


class ScaleSource(SourceConfig):
    """A synthetic corpus at MIMIC size (see the module docstring); ``shape`` fills the sizes it names."""

    kind: Literal["synthetic_scale"] = "synthetic_scale"
    shape: Literal["mimic3-full", "mimic4-icd10", "custom"] = "custom"
    n_train: int = Field(1_000, ge=1)
    n_dev: int = Field(200, ge=1)
    n_test: int = Field(200, ge=1)
    n_codes: int = Field(2_000, ge=2, le=70_000)
    codes_per_note: float = Field(15.0, ge=1.0)
    words_per_note: int = Field(1_500, ge=20)
    vocab_size: int = Field(120_000, ge=1_000, le=1_000_000)
    zipf_exponent: float = Field(1.1, ge=0.0)
    negated_per_note: float = Field(2.0, ge=0.0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _shape_sizes(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("shape") in SHAPES:
            train, dev, test, codes = SHAPES[data["shape"]]
            data = {"n_train": train, "n_dev": dev, "n_test": test, "n_codes": codes, **data}
        return data

    @classmethod
    def scaled(cls, shape: str, fraction: float, **options: object) -> ScaleSource:
        """The benchmark ``shape`` with every split scaled by ``fraction`` (at least one note each); codes as the shape's."""
        train, dev, test, _ = SHAPES[shape]
        sizes = {
            name: max(1, round(n * fraction)) for name, n in (("n_train", train), ("n_dev", dev), ("n_test", test))
        }
        return cls.model_validate({"shape": shape, **sizes, **options})

    @property
    def n_notes(self) -> int:
        return self.n_train + self.n_dev + self.n_test

    def split_of(self, index: int) -> str:
        return "train" if index < self.n_train else "dev" if index < self.n_train + self.n_dev else "test"

    def read(self) -> list[Note]:
        return list(iter_scale_notes(self))


@dataclass(frozen=True)
class _Vocabulary:
    codes: tuple[str, ...]  # the corpus's codes, most frequent first
    titles: tuple[tuple[str, ...], ...]  # each code's title words (lower-case)
    code_cdf: np.ndarray  # cumulative Zipf weights of the codes
    topic_codes: tuple[np.ndarray, ...]  # each comorbidity topic's codes
    topic_cdfs: tuple[np.ndarray, ...]  # their cumulative weights within the topic
    topic_cdf: np.ndarray  # cumulative weight (code mass) of the topics
    words: np.ndarray  # filler words (object array), most frequent first
    word_cdf: np.ndarray


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _invented_words(n: int, seed: int) -> list[str]:
    """``n`` distinct made-up words of 2-4 syllables (the long tail of a clinical vocabulary)."""
    rng = np.random.default_rng([seed, 1])
    syllables = np.array(_SYLLABLES + [""], dtype=object)  # "" pads 2- and 3-syllable words
    found = dict.fromkeys(_COMMON)
    while len(found) < n + len(_COMMON):
        size = 2 * (n + len(_COMMON) - len(found)) + 64
        picks = rng.integers(0, len(_SYLLABLES), size=(size, 4))
        lengths = rng.integers(2, 5, size=size)
        picks[np.arange(4)[None, :] >= lengths[:, None]] = len(_SYLLABLES)
        parts = syllables[picks]
        for word in parts[:, 0] + parts[:, 1] + parts[:, 2] + parts[:, 3]:
            found.setdefault(word, None)
            if len(found) == n + len(_COMMON):
                break
    return list(found)[len(_COMMON) :]


@cache
def _vocabulary(n_codes: int, vocab_size: int, exponent: float, seed: int) -> _Vocabulary:
    codes, descriptions = catalog_entries("icd10cm", leaves_only=True)
    if n_codes > len(codes):
        raise ValueError(f"n_codes must be at most {len(codes)} (the ICD-10-CM leaf codes)")
    rng = np.random.default_rng([seed, 0])
    chosen = rng.choice(len(codes), size=n_codes, replace=False)  # in frequency order: the first is the commonest
    titles = tuple(tuple(descriptions[i].lower().replace(",", "").split()) for i in chosen)
    words = np.array(list(_COMMON) + _invented_words(vocab_size - len(_COMMON), seed), dtype=object)
    weights = 1.0 / np.arange(1, n_codes + 1, dtype=np.float64) ** exponent
    topic_of = rng.permutation(n_codes) % max(1, n_codes // _CODES_PER_TOPIC)
    topic_codes = tuple(np.flatnonzero(topic_of == t) for t in range(int(topic_of.max()) + 1))
    topic_mass = np.array([weights[members].sum() for members in topic_codes])
    return _Vocabulary(
        codes=tuple(codes[i] for i in chosen),
        titles=titles,
        code_cdf=_zipf_cdf(n_codes, exponent),
        topic_codes=topic_codes,
        topic_cdfs=tuple(np.cumsum(weights[m]) / weights[m].sum() for m in topic_codes),
        topic_cdf=np.cumsum(topic_mass) / topic_mass.sum(),
        words=words,
        word_cdf=_zipf_cdf(vocab_size, 1.0),
    )


def _draw(rng: np.random.Generator, cdf: np.ndarray) -> int:
    return int(min(np.searchsorted(cdf, rng.random(), side="right"), len(cdf) - 1))


def _draw_codes(rng: np.random.Generator, vocab: _Vocabulary, count: int, topics: list[int] | None = None) -> list[int]:
    """``count`` distinct code indices: from the note's comorbidity ``topics`` (drawn by their code mass) with
    probability ``_IN_TOPIC``, else from all codes, each code by its Zipf weight; so a code's overall frequency
    follows the Zipf law and codes of a topic occur together, as diagnoses of one patient do."""
    count = min(count, len(vocab.codes))
    found: dict[int, None] = {}
    for _ in range(50 * count + 100):
        if len(found) == count:
            break
        if topics and rng.random() < _IN_TOPIC:
            topic = topics[int(rng.integers(len(topics)))]
            code = int(vocab.topic_codes[topic][_draw(rng, vocab.topic_cdfs[topic])])
        else:
            code = _draw(rng, vocab.code_cdf)
        found.setdefault(code, None)
    return list(found)


def _mention(rng: np.random.Generator, title: tuple[str, ...]) -> str:
    """A coded condition as a note says it: its title, some words dropped, maybe two swapped."""
    words = [w for w in title if rng.random() > 0.15] or list(title)
    if len(words) > 2 and rng.random() < 0.3:
        i = int(rng.integers(0, len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def scale_note(config: ScaleSource, index: int) -> Note:
    """Note number ``index`` (0-based) of the corpus: a function of ``(config, index)`` alone."""
    vocab = _vocabulary(config.n_codes, config.vocab_size, config.zipf_exponent, config.seed)
    rng = np.random.default_rng([config.seed, 2, index])
    n_codes = max(1, int(rng.poisson(config.codes_per_note - 1)) + 1)
    topics = [_draw(rng, vocab.topic_cdf) for _ in range(_TOPICS_PER_NOTE)]
    coded = _draw_codes(rng, vocab, n_codes, topics)
    negated = [code for code in _draw_codes(rng, vocab, int(rng.poisson(config.negated_per_note))) if code not in coded]
    # Each code is mentioned once or twice; the mentions and the negated ones are scattered among the filler.
    sentences = [f"{_LEADS[int(rng.integers(len(_LEADS)))]} {_mention(rng, vocab.titles[c])}" for c in coded]
    sentences += [
        f"{_LEADS[int(rng.integers(len(_LEADS)))]} {_mention(rng, vocab.titles[c])}"
        for c in coded
        if rng.random() < 0.5
    ]
    sentences += [f"{_NEGATIONS[int(rng.integers(len(_NEGATIONS)))]} {_mention(rng, vocab.titles[c])}" for c in negated]
    n_filler = max(0, config.words_per_note - sum(s.count(" ") + 1 for s in sentences))
    filler = vocab.words[
        np.searchsorted(vocab.word_cdf, rng.random(n_filler), side="right").clip(max=len(vocab.words) - 1)
    ]
    n_chunks = max(1, n_filler // _WORDS_PER_SENTENCE)
    chunks = [" ".join(part) for part in np.array_split(filler, n_chunks) if len(part)]
    slots = rng.integers(0, len(chunks) + 1, size=len(sentences))
    body: list[str] = []
    placed = sorted(zip(slots.tolist(), range(len(sentences)), strict=True))
    position = 0
    for slot, k in placed:
        body.extend(chunks[position:slot])
        position = max(position, slot)
        body.append(sentences[k])
    body.extend(chunks[position:])
    text = ". ".join(body) + "."
    return Note(
        id=f"scale-{index:07d}",
        text=text[0].upper() + text[1:],
        labels=tuple(vocab.codes[c] for c in coded),
        split=config.split_of(index),
    )


def iter_scale_notes(config: ScaleSource, start: int = 0, stop: int | None = None) -> Iterator[Note]:
    """Notes ``start`` .. ``stop - 1`` of the corpus, one at a time."""
    for index in range(start, config.n_notes if stop is None else min(stop, config.n_notes)):
        yield scale_note(config, index)


def write_scale_corpus(config: ScaleSource, path: str | Path, *, progress=None) -> int:
    """Stream the corpus to a JSONL file in our format (``id``, ``text``, ``labels``, ``split``); returns its notes.

    Written to a temporary sibling and renamed at the end: a killed run leaves no half corpus behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    total = config.n_notes
    with tmp.open("w", encoding="utf-8") as out:
        for done, note in enumerate(iter_scale_notes(config), start=1):
            record = {"id": note.id, "text": note.text, "labels": list(note.labels), "split": note.split}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if progress is not None and (done % 1000 == 0 or done == total):
                progress(done, total)
    tmp.replace(path)
    return total
