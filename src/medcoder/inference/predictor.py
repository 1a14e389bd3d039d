"""Code new notes with a saved bundle: ``Predictor.from_dir(path).predict(texts)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.models.bundle import Bundle, load_bundle
from medcoder.progress import Update

_BATCH = 256  # notes scored at once: bounds memory of the sparse/dense features


@dataclass(frozen=True)
class CodeScore:
    """One code for one note."""

    code: str
    description: str | None
    probability: float
    predicted: bool  # above the bundle's tuned threshold (or the argmax class)
    rank: int  # 1 = highest probability
    evidence: list[Evidence] | None = None  # with explain=True: the text spans the model attended to


@dataclass(frozen=True)
class Evidence:
    """A character span ``text[start:end]`` of the note and its share of the code's attention."""

    start: int
    end: int
    text: str
    weight: float


@dataclass(frozen=True)
class NotePrediction:
    """Ranked codes for one note; ``codes`` holds the predicted ones and, if asked, the top-k."""

    id: str | None
    codes: list[CodeScore]
    # retrieval folders only: codes the classifier never saw, suggested apart from the ranking
    new_codes: list[CodeScore] | None = None

    @property
    def predicted(self) -> list[CodeScore]:
        return [c for c in self.codes if c.predicted]

    def to_dict(self) -> dict[str, Any]:
        def rows(items: list[CodeScore]) -> list[dict[str, Any]]:
            out = [asdict(c) for c in items]
            for code in out:
                if code["evidence"] is None:  # only explained predictions carry the key
                    del code["evidence"]
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


class Predictor:
    """Loads a bundle once, then codes any number of notes."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.codes = bundle.labels.codes
        self.descriptions = bundle.labels.descriptions()

    @classmethod
    def from_dir(cls, path: str | Path) -> Predictor:
        return cls(load_bundle(path))

    @property
    def single_label(self) -> bool:
        return self.bundle.thresholds is None

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Probabilities float32 ``[n_notes, n_labels]`` (columns in ``self.codes`` order)."""
        check_note_texts(texts, "predict_proba")
        if self.bundle.task == "pair" and (pairs is None or len(pairs) != len(texts)):
            raise MedcoderError("this model codes text pairs: give one second text per note")
        out = np.zeros((len(texts), len(self.codes)), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            stop = min(start + _BATCH, len(texts))
            batch_pairs = None if pairs is None else pairs[start:stop]
            out[start:stop] = self.bundle.model.predict_scores(texts[start:stop], pairs=batch_pairs)
            if progress:
                progress(stop, len(texts))
        return out

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """bool ``[n_notes, n_labels]``: tuned thresholds, or the argmax for single-label tasks."""
        if self.bundle.thresholds is None:
            decided = np.zeros(probabilities.shape, dtype=bool)
            decided[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = True
            return decided
        return self.bundle.thresholds.apply(probabilities)

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

        ``explain`` adds, for every listed code, the text spans its attention
        weighed most (models with label-wise attention only).
        """
        if ids is not None and len(ids) != len(texts):
            raise MedcoderError(f"{len(ids)} ids for {len(texts)} texts")
        explainer = getattr(self.bundle.model, "explain", None) if explain else None
        if explain and explainer is None:
            raise MedcoderError(f"model {self.bundle.config.model.type} cannot explain its codes (no attention)")
        probabilities = self.predict_proba(texts, pairs=pairs, progress=progress)
        decided = self.decide(probabilities)
        shown_per_note = []
        for probs, chosen in zip(probabilities, decided, strict=True):
            order = np.argsort(-probs, kind="stable")
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(1, len(order) + 1)
            shown_per_note.append((order[(chosen | (rank <= top_k))[order]], rank))
        evidence = explainer(texts, [shown for shown, _ in shown_per_note]) if explainer else None
        results = []
        for row, (shown, rank) in enumerate(shown_per_note):
            codes = [
                CodeScore(
                    code=self.codes[j],
                    description=self.descriptions[j],
                    probability=round(float(probabilities[row, j]), 6),
                    predicted=bool(decided[row, j]),
                    rank=int(rank[j]),
                    evidence=None
                    if evidence is None
                    else [
                        Evidence(start, end, texts[row][start:end], round(weight, 4))
                        for start, end, weight in evidence[row].get(int(j), [])
                    ],
                )
                for j in shown
            ]
            results.append(NotePrediction(id=None if ids is None else ids[row], codes=codes))
        return results
