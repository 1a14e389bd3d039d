"""The prediction contract every saved system keeps, and the records it returns.

``medcoder.load(path)`` returns a :class:`Coder`, whatever the folder holds (one
model, a seed ensemble, a retrieval + classifier fusion, a reranker). The base
class owns the contract: ``predict_proba`` gives scores over ``coder.codes``,
``predict`` the ranked codes of each note (predicted ones flagged, descriptions,
evidence on request), ``explain`` the text spans behind given codes. Ranking,
the tie order, top-k, the decision rule, the explain contract and the output
records live here once; a kind supplies only its primitives:

- :meth:`Coder.score_batch`: the scores of a batch of notes, dense over
  ``codes`` or sparse (the codes it scored), plus what its evidence needs;
- :attr:`Coder.decision`: the dev-tuned thresholds (None: the argmax decides);
- :meth:`Coder.evidence`: the text spans behind codes (when it can explain);
- :attr:`Coder.capabilities`: what it can do, read by callers instead of probing.

**Tie order.** Codes are ranked by score, highest first; codes of equal score
keep the order of :attr:`Coder.codes` (the lower column first). A single-label
system's argmax is the first-ranked code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medcoder.bundles import bundle_identity
from medcoder.config import DataConfig
from medcoder.data.dataset import texts_of
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.evaluation.open_set import evaluate_open_set
from medcoder.evaluation.report import format_frequency_table, format_metrics_table, format_systems_table
from medcoder.evaluation.scoring import score_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.records import CodeScore, Evidence, NotePrediction
from medcoder.progress import Update

# the coded-note records are defined in records.py; they are part of this contract and importable from here
__all__ = ["Capabilities", "Coder", "CodeScore", "Evidence", "NotePrediction", "Scores", "SystemInfo"]


@dataclass(frozen=True)
class Capabilities:
    """What a saved system can do: callers read this, they never probe with a fake note."""

    explain: bool = False  # predict(explain=True) and explain() give evidence spans
    why_not_explain: str = ""  # the one-line reason when ``explain`` is False
    new_codes: bool = False  # NotePrediction.new_codes: codes the classifier never saw, suggested apart
    pairs: bool = False  # each note comes with a second text (a sentence-pair model)


@dataclass(frozen=True)
class SystemInfo:
    """Who a saved system is, typed: what the service, batch output, the audit and the report show."""

    kind: str
    name: str
    identity: str  # ``name@<12 hex>`` of its config and files (see :func:`medcoder.bundles.bundle_identity`)
    label_system: str  # the catalog its codes come from: icd10cm, icd9cm, ... or none
    n_codes: int
    model_type: str | None  # a single model's registered type; None for systems of several parts
    capabilities: Capabilities
    test_metrics: dict[str, Any]  # the test figures written at training time (``evaluate`` gives the same)


@dataclass
class Scores:
    """A batch of notes scored by a kind: dense over :attr:`Coder.codes`, or sparse (the columns it scored)."""

    dense: np.ndarray | None = None  # float32 [notes, codes]
    sparse: list[dict[int, float]] | None = None  # per note {column: score}; a column not listed is not ranked
    new_codes: list[list[tuple[str, float]]] | None = None  # per note, codes suggested apart (best first)
    context: Any = None  # what the kind's evidence needs from scoring (passed back to Coder.evidence)

    def __len__(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.sparse or [])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns int64, scores) of note ``i``: every column when dense (float32), the scored ones when sparse
        (float64: the kind's own numbers, rounded only where they are shown)."""
        if self.dense is not None:
            return np.arange(self.dense.shape[1]), self.dense[i]
        assert self.sparse is not None
        note = self.sparse[i]
        return np.fromiter(note.keys(), np.int64, len(note)), np.fromiter(note.values(), np.float64, len(note))


def check_note_texts(texts: Sequence[str], caller: str) -> None:
    """Raise unless ``texts`` is a sequence (not one string) of non-empty strings."""
    if isinstance(texts, str):
        raise TypeError(f"{caller} takes a sequence of texts, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise MedcoderError(f"note {i}: text is empty or not a string")


def check_per_note(values: Sequence[Any] | None, texts: Sequence[str], what: str) -> None:
    """Raise unless ``values`` (ids, code lists...; None: not given) has one entry per text."""
    if values is not None and len(values) != len(texts):
        raise MedcoderError(f"{len(values)} {what} for {len(texts)} texts")


def ranked(columns: np.ndarray | None, scores: np.ndarray) -> np.ndarray:
    """Positions of ``columns`` in ranking order: score highest first, ties by column (the tie order).

    ``columns`` None: the scores of every column in order (a dense row), where a stable sort is the tie order.
    """
    if columns is None:
        return np.argsort(-scores, kind="stable")
    return np.lexsort((columns, -scores.astype(np.float64)))


class Coder(ABC):
    """A saved system, loaded: what ``medcoder.load`` returns for every kind of bundle."""

    #: the kind written in the bundle's config.json (its registry name)
    kind: ClassVar[str]
    #: notes scored at once: bounds the memory of features and of sparse score rows
    batch_size: ClassVar[int] = 64

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path  # the folder it was loaded from (None: built in memory)
        self.header = header  # its config.json

    # ------------------------------------------------------------ what a kind supplies
    @classmethod
    @abstractmethod
    def load(cls, path: Path, header: dict[str, Any]) -> Coder:
        """Open the bundle folder ``path`` whose ``config.json`` is ``header``."""

    @property
    @abstractmethod
    def codes(self) -> list[str]:
        """The codes this system scores: the columns of :meth:`predict_proba`."""

    @abstractmethod
    def description(self, code: str) -> str | None:
        """The catalog description of ``code`` (None when unknown)."""

    @abstractmethod
    def score_batch(self, texts: Sequence[str], pairs: Sequence[str] | None) -> Scores:
        """Scores of one batch of checked notes (at most :attr:`batch_size`)."""

    @property
    @abstractmethod
    def decision(self) -> Thresholds | None:
        """The dev-tuned thresholds the scores are compared with; None: the argmax class is predicted."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(why_not_explain=f"this {self.kind} system cannot explain its codes")

    def evidence(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], top: int, context: Any
    ) -> list[dict[str, list[Evidence]]]:
        """Per note ``{code: spans}`` (strongest first, inside the note; [] where nothing supports it).

        ``context`` is :attr:`Scores.context` of these notes when called from :meth:`predict`, None otherwise.
        Only called when :attr:`capabilities` says the system explains.
        """
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The system's name: its config's, else its kind (never the folder's: a moved bundle keeps its name)."""
        named = (self.header.get("run") or {}).get("name") or (self.header.get("config") or {}).get("name")
        return str(named or self.header.get("name") or self.kind)

    @property
    def model_type(self) -> str | None:
        return None

    def test_metrics(self) -> dict[str, Any]:
        """The test figures written when the system was trained ({} when it keeps none)."""
        metrics = self.header.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        """The ``labels.json`` of the label space inside the bundle ``path`` (None: it has none)."""
        return None

    def label_space(self) -> LabelSpace | None:
        """The label space fitted on the training data (codes, train frequencies, fit options); None: it has none."""
        if self.path is None:
            return None
        file = self.labels_file(self.path, self.header)
        return LabelSpace.from_json(file) if file is not None and file.is_file() else None

    @property
    def label_system(self) -> str:
        """The catalog the codes come from (``none`` for labels of no catalog)."""
        labels = self.label_space()
        return labels.system if labels is not None else "none"

    @abstractmethod
    def data_config(self) -> DataConfig:
        """The data the system was trained and tuned on (``medcoder evaluate`` scores its test split by default)."""

    def gold(self, notes: Sequence[Note]) -> list[list[str]]:
        """Each note's gold codes as this system names them (its label space's mapping)."""
        labels = self.label_space()
        if labels is None:
            raise MedcoderError(f"this {self.kind} system has no label space to map gold codes with")
        return [labels.map_labels(note.labels) for note in notes]

    def seen_codes(self) -> set[str]:
        """The codes of the training notes: a gold code outside them is "unseen" in the open-set figures."""
        labels = self.label_space()
        return {code for code, n in labels.train_freq.items() if n > 0} if labels is not None else set()

    def train_codes(self) -> list[str] | None:
        """The codes of the open-set figures' label space besides the gold ones (None: macro-F1 is not given)."""
        labels = self.label_space()
        return list(labels.train_freq) if labels is not None else None

    # ------------------------------------------------------------ the contract, once
    @property
    def needs_pairs(self) -> bool:
        """Whether each note comes with a second text (a sentence-pair model)."""
        return self.capabilities.pairs

    def can_explain(self) -> bool:
        """Whether :meth:`explain` (and ``predict(explain=True)``) gives evidence spans."""
        return self.capabilities.explain

    @cached_property
    def identity(self) -> str:
        """``name@<12 hex>``: the one name of this saved system in the audit, batch output, the service and report."""
        if self.path is not None and (self.path / "config.json").is_file():
            return f"{self.name}@{bundle_identity(self.path)[:12]}"
        return f"{self.name}@{bundle_identity(None, header=self.header)[:12]}"

    @property
    def info(self) -> SystemInfo:
        return SystemInfo(
            kind=self.kind,
            name=self.name,
            identity=self.identity,
            label_system=self.label_system,
            n_codes=len(self.codes),
            model_type=self.model_type,
            capabilities=self.capabilities,
            test_metrics=self.test_metrics(),
        )

    def _check(self, texts: Sequence[str], pairs: Sequence[str] | None, caller: str) -> None:
        check_note_texts(texts, caller)
        if self.capabilities.pairs:
            if pairs is None or len(pairs) != len(texts):
                raise MedcoderError("this model codes text pairs: give one second text per note")
        elif pairs is not None:
            raise MedcoderError(f"a {self.kind} system codes single notes, not pairs")

    def _refuse_explain(self) -> None:
        if not self.capabilities.explain:
            raise MedcoderError(
                self.capabilities.why_not_explain or f"this {self.kind} system cannot explain its codes"
            )

    def batches(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> Iterator[tuple[int, Scores]]:
        """``(first note's position, its batch's Scores)`` a batch at a time, after checking the notes."""
        self._check(texts, pairs, "predict")
        for start in range(0, len(texts), self.batch_size):
            stop = min(start + self.batch_size, len(texts))
            yield start, self.score_batch(texts[start:stop], None if pairs is None else pairs[start:stop])
            if progress is not None:
                progress(stop, len(texts))

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Scores float32 ``[n_notes, len(codes)]`` (0 where a sparse system scored nothing).

        A system over the whole catalog has ~98k columns (0.4 MB a note): :meth:`batches` gives them sparsely.
        """
        out = np.zeros((len(texts), len(self.codes)), dtype=np.float32)
        for start, scores in self.batches(texts, pairs=pairs, progress=progress):
            if scores.dense is not None:
                out[start : start + len(scores)] = scores.dense
                continue
            for i in range(len(scores)):
                columns, values = scores.row(i)
                out[start + i, columns] = values
        return out

    def _cutoffs(self) -> float | np.ndarray | None:
        """The thresholds as one value or one per column; None: the argmax decides."""
        rule = self.decision
        return None if rule is None else rule.values()

    @staticmethod
    def _decide(
        columns: np.ndarray, scores: np.ndarray, order: np.ndarray, cut: float | np.ndarray | None
    ) -> np.ndarray:
        """bool per entry of one note's ``columns`` (``order``: its ranking): the decision rule applied."""
        if cut is None:
            chosen = np.zeros(len(columns), dtype=bool)
            chosen[order[:1]] = True  # the argmax: the first-ranked code
            return chosen
        return scores >= (cut if np.ndim(cut) == 0 else cut[columns])

    def predict(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        pairs: Sequence[str] | None = None,
        top_k: int = 0,
        explain: bool = False,
        progress: Update | None = None,
    ) -> list[NotePrediction]:
        """Per note: the predicted codes plus the ``top_k`` best-ranked ones, highest first (see the tie order).

        ``explain`` adds to every listed code the text spans behind it (a system
        that cannot explain raises a ``MedcoderError`` before any work).
        """
        check_per_note(ids, texts, "ids")
        if explain:
            self._refuse_explain()
        codes, new, cut = self.codes, self.capabilities.new_codes, self._cutoffs()
        results = []
        for start, scores in self.batches(texts, pairs=pairs, progress=progress):
            listed = []
            for i in range(len(scores)):
                columns, values = scores.row(i)
                order = ranked(None if scores.dense is not None else columns, values)
                chosen = self._decide(columns, values, order, cut)
                keep = chosen[order]  # by ranking position: the predicted ones and the top_k best
                keep[:top_k] = True
                positions = np.flatnonzero(keep)
                shown = list(zip((positions + 1).tolist(), order[positions].tolist(), strict=True))
                suggested = scores.new_codes[i] if new and scores.new_codes is not None else []
                listed.append((columns, values, chosen, shown, suggested))
            spans: list[dict[str, list[Evidence]]] | None = None
            if explain:
                asked = [[codes[c[j]] for _, j in s] + [code for code, _ in n] for c, _, _, s, n in listed]
                batch = texts[start : start + len(scores)]
                spans = self.evidence(batch, asked, 3, scores.context)
            for i, (columns, values, chosen, shown, suggested) in enumerate(listed):
                found = None if spans is None else spans[i]
                ranked_codes = [
                    self._code_score(codes[columns[j]], values[j], rank, bool(chosen[j]), found) for rank, j in shown
                ]
                new_codes = [
                    self._code_score(code, score, rank, True, found)
                    for rank, (code, score) in enumerate(suggested, start=1)
                ]
                note_id = None if ids is None else ids[start + i]
                results.append(NotePrediction(note_id, ranked_codes, new_codes if new else None))
        return results

    def _code_score(
        self, code: str, score: float, rank: int, predicted: bool, spans: dict[str, list[Evidence]] | None
    ) -> CodeScore:
        evidence = None if spans is None else spans.get(code, [])
        return CodeScore(code, self.description(code), round(float(score), 6), predicted, rank, evidence)

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        """Per note, ``{code: evidence spans}`` for the codes asked (strongest first, inside the note)."""
        check_note_texts(texts, "explain")
        check_per_note(codes, texts, "code lists")
        self._refuse_explain()
        known = set(self.codes)
        unknown = sorted({c for note in codes for c in note} - known)
        if unknown:
            raise MedcoderError(f"codes the {self.kind} system does not score: {', '.join(unknown[:10])}")
        return self.evidence(texts, codes, top, None)

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        """Figures of the system on labelled ``notes`` (METRICS.md conventions, the decision rule tuned on dev).

        A system that scores its whole label space (dense scores) gets the closed-set figures of a model
        (all-gold and train-seen sections, F1 by code frequency); one that scores a few codes per note out of a
        catalog (sparse) the open-set figures over all gold codes and those unseen in training.
        """
        texts, pairs = texts_of(list(notes))
        batches = [scores for _, scores in self.batches(texts, pairs=pairs, progress=progress)]
        if all(b.dense is not None for b in batches):
            dense = [b.dense for b in batches if b.dense is not None]
            matrix = np.concatenate(dense) if dense else np.zeros((0, len(self.codes)), dtype=np.float32)
            labels = self.label_space()
            if labels is None:
                raise MedcoderError(f"this {self.kind} system has no label space to evaluate against")
            return score_notes(matrix, notes, labels, self.decision)
        codes = self.codes
        rows = []
        for scores in batches:
            for i in range(len(scores)):
                columns, values = scores.row(i)
                rows.append({codes[j]: float(v) for j, v in zip(columns.tolist(), values.tolist(), strict=True)})
        rule = self.decision
        threshold = None if rule is None else rule.global_
        return evaluate_open_set(
            rows, self.gold(notes), self.seen_codes(), threshold=threshold, train_codes=self.train_codes()
        )

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        """:meth:`evaluate`'s figures as Markdown."""
        if "all_gold" in metrics or "accuracy" in metrics:  # the closed-set figures of a model
            table = format_metrics_table(metrics)
            by_frequency = format_frequency_table(metrics)
            if by_frequency:
                table += "\nF1 by train frequency of the code:\n\n" + by_frequency
            return table
        return format_systems_table({self.name: metrics})
