"""The prediction contract every saved system keeps, and the records it returns.

``medcoder.load(path)`` returns a :class:`Coder`, whatever the folder holds (one
model, a seed ensemble, a retrieval + classifier fusion): ``predict_proba``
gives scores over ``coder.codes``, ``predict`` the ranked codes of each note
(predicted ones flagged, descriptions, evidence on request), ``explain`` the
text spans behind given codes, ``evaluate`` the figures against gold codes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medcoder.config import DataConfig
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.progress import Update


@dataclass(frozen=True)
class Evidence:
    """A character span ``text[start:end]`` of the note and how strongly it supports the code."""

    start: int
    end: int
    text: str
    weight: float
    source: str | None = None  # the signal that found it, in a system of several (a base model, "retrieval")


@dataclass(frozen=True)
class CodeScore:
    """One code for one note."""

    code: str
    description: str | None
    probability: float
    predicted: bool  # above the system's tuned threshold (or the argmax class)
    rank: int  # 1 = highest probability
    evidence: list[Evidence] | None = None  # with explain=True: the text spans behind the code


@dataclass(frozen=True)
class NotePrediction:
    """Ranked codes for one note; ``codes`` holds the predicted ones and, if asked, the top-k."""

    id: str | None
    codes: list[CodeScore]
    # systems that know the whole catalog: codes the classifier never saw, suggested apart from the ranking
    new_codes: list[CodeScore] | None = None

    @property
    def predicted(self) -> list[CodeScore]:
        return [c for c in self.codes if c.predicted]

    def to_dict(self) -> dict[str, Any]:
        # Fields written out by hand: dataclasses.asdict deep-copies recursively and took a quarter of batch
        # prediction's time per note. Keys and their order are asdict's.
        def span(e: Evidence) -> dict[str, Any]:
            out = {"start": e.start, "end": e.end, "text": e.text, "weight": e.weight}
            if e.source:  # a span's source is named only by systems of several signals
                out["source"] = e.source
            return out

        def rows(items: list[CodeScore]) -> list[dict[str, Any]]:
            out = []
            for c in items:
                row = {
                    "code": c.code,
                    "description": c.description,
                    "probability": c.probability,
                    "predicted": c.predicted,
                    "rank": c.rank,
                }
                if c.evidence is not None:  # only explained predictions carry the key
                    row["evidence"] = [span(e) for e in c.evidence]
                out.append(row)
            return out

        result = {"id": self.id, "codes": rows(self.codes)}
        if self.new_codes is not None:
            result["new_codes"] = rows(self.new_codes)
        return result


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


def refuse_pairs(pairs: Sequence[str] | None, system: str) -> None:
    """Raise when second texts are given to a ``system`` that codes single notes."""
    if pairs is not None:
        raise MedcoderError(f"a {system} system codes single notes, not pairs")


class Coder(ABC):
    """A saved system, loaded: what ``medcoder.load`` returns for every kind of bundle."""

    #: the kind written in the bundle's config.json (its registry name)
    kind: ClassVar[str]

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path  # the folder it was loaded from (None: built in memory)
        self.header = header  # its config.json

    @classmethod
    @abstractmethod
    def load(cls, path: Path, header: dict[str, Any]) -> Coder:
        """Open the bundle folder ``path`` whose ``config.json`` is ``header``."""

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
    @abstractmethod
    def codes(self) -> list[str]:
        """The codes this system scores: the columns of :meth:`predict_proba`."""

    @abstractmethod
    def description(self, code: str) -> str | None:
        """The catalog description of ``code`` (None when unknown)."""

    @property
    def needs_pairs(self) -> bool:
        """Whether each note comes with a second text (a sentence-pair model)."""
        return False

    @abstractmethod
    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Scores float32 ``[n_notes, len(codes)]`` (probabilities for a single model; fused scores otherwise)."""

    @abstractmethod
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
        """Per note: the predicted codes plus the ``top_k`` best-ranked ones, highest first.

        ``explain`` adds to every listed code the text spans behind it (a system
        that cannot explain raises a ``MedcoderError`` before any work).
        """

    def can_explain(self) -> bool:
        """Whether :meth:`explain` (and ``predict(explain=True)``) gives evidence spans."""
        return False

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        """Per note, ``{code: evidence spans}`` for the codes asked (strongest first, inside the note)."""
        raise MedcoderError(f"this {self.kind} system cannot explain its codes")

    @abstractmethod
    def data_config(self) -> DataConfig:
        """The data the system was trained and tuned on (``medcoder evaluate`` scores its test split by default)."""

    @abstractmethod
    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        """Figures of the system on labelled ``notes`` (METRICS.md conventions, thresholds as tuned on dev)."""

    @abstractmethod
    def metrics_table(self, metrics: dict[str, Any]) -> str:
        """:meth:`evaluate`'s figures as Markdown."""


def ranked(scores: np.ndarray, chosen: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns to show, rank of every column) for one note: the chosen ones and the ``top_k`` best, best first."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return order[(chosen | (rank <= top_k))[order]], rank
