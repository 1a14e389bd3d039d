"""The saved system of kind ``model``: one trained model (a seed ensemble included) and its dev-tuned thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.config import DataConfig
from medcoder.data.dataset import texts_of
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.evaluation.calibration import calibrate_probabilities
from medcoder.evaluation.report import format_frequency_table, format_metrics_table
from medcoder.evaluation.scoring import score_notes
from medcoder.inference.base import (
    Coder,
    CodeScore,
    Evidence,
    NotePrediction,
    check_note_texts,
    check_per_note,
    ranked,
)
from medcoder.models.bundle import Bundle, load_bundle
from medcoder.progress import Update
from medcoder.registry import SYSTEMS

_BATCH = 256  # notes scored at once: bounds memory of the sparse/dense features


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole words: a span that starts or ends inside a word takes all of it.

    A transformer attends to subword pieces ("nitrofur" of "nitrofurantoin"); a coder reads words.
    """
    while 0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


@SYSTEMS.register("model")
class ModelCoder(Coder):
    """Loads a model bundle once, then codes any number of notes."""

    kind = "model"

    def __init__(self, bundle: Bundle, path: Path | None = None, header: dict[str, Any] | None = None) -> None:
        super().__init__(path, header or {"kind": "model", "run": bundle.config.model_dump(mode="json")})
        self.bundle = bundle
        self._codes = bundle.labels.codes
        self._index = {code: j for j, code in enumerate(self._codes)}
        self.descriptions = bundle.labels.descriptions()

    @classmethod
    def load(cls, path: Path, header: dict[str, Any]) -> ModelCoder:
        return cls(load_bundle(path, header=header), path, header)

    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        return path / "labels.json"

    def label_space(self) -> LabelSpace:
        return self.bundle.labels

    @property
    def codes(self) -> list[str]:
        return self._codes

    def description(self, code: str) -> str | None:
        j = self._index.get(code)
        return None if j is None else self.descriptions[j]

    @property
    def single_label(self) -> bool:
        return self.bundle.thresholds is None

    @property
    def needs_pairs(self) -> bool:
        return self.bundle.task == "pair"

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Probabilities float32 ``[n_notes, n_labels]`` (columns in ``self.codes`` order).

        Calibrated as the bundle's calibration.json says (fitted on dev; the thresholds apply to these).
        """
        check_note_texts(texts, "predict_proba")
        if self.needs_pairs and (pairs is None or len(pairs) != len(texts)):
            raise MedcoderError("this model codes text pairs: give one second text per note")
        out = np.zeros((len(texts), len(self._codes)), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            stop = min(start + _BATCH, len(texts))
            batch_pairs = None if pairs is None else pairs[start:stop]
            scores = self.bundle.model.predict_scores(texts[start:stop], pairs=batch_pairs)
            out[start:stop] = calibrate_probabilities(self.bundle.calibrator, scores)
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

    def can_explain(self) -> bool:
        return self.bundle.model.can_explain()

    def _evidence(
        self, texts: Sequence[str], columns: Sequence[Sequence[int]], top: int
    ) -> list[dict[int, list[Evidence]]]:
        spans = self.bundle.model.explain(texts, columns, top=top)
        out = []
        for text, note in zip(texts, spans, strict=True):
            evidence: dict[int, list[Evidence]] = {}
            for j, found in note.items():
                words: dict[tuple[int, int], float] = {}  # strongest first: two pieces of one word keep the first
                for s, e, w in found:
                    words.setdefault(whole_words(text, s, e), w)
                evidence[j] = [Evidence(s, e, text[s:e], round(w, 4)) for (s, e), w in words.items()]
            out.append(evidence)
        return out

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        check_note_texts(texts, "explain")
        check_per_note(codes, texts, "code lists")
        unknown = sorted({c for note in codes for c in note} - self._index.keys())
        if unknown:
            raise MedcoderError(f"codes the model does not know: {', '.join(unknown[:10])}")
        columns = [[self._index[c] for c in note] for note in codes]
        evidence = self._evidence(texts, columns, top)
        return [{self._codes[j]: spans for j, spans in note.items()} for note in evidence]

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
        check_per_note(ids, texts, "ids")
        if explain and not self.can_explain():
            raise MedcoderError(
                f"model {self.bundle.model.name} cannot explain its codes: it gives no evidence spans "
                "(tfidf_lr.v1 and the models with label-wise attention do)"
            )
        probabilities = self.predict_proba(texts, pairs=pairs, progress=progress)
        decided = self.decide(probabilities)
        shown_per_note = [ranked(p, chosen, top_k) for p, chosen in zip(probabilities, decided, strict=True)]
        evidence = self._evidence(texts, [shown.tolist() for shown, _ in shown_per_note], 3) if explain else None
        results = []
        for row, (shown, rank) in enumerate(shown_per_note):
            codes = [
                CodeScore(
                    code=self._codes[j],
                    description=self.descriptions[j],
                    probability=round(float(probabilities[row, j]), 6),
                    predicted=bool(decided[row, j]),
                    rank=int(rank[j]),
                    evidence=None if evidence is None else evidence[row].get(int(j), []),
                )
                for j in shown
            ]
            results.append(NotePrediction(id=None if ids is None else ids[row], codes=codes))
        return results

    def data_config(self) -> DataConfig:
        return self.bundle.config.data

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        texts, pairs = texts_of(list(notes))
        scores = self.predict_proba(texts, pairs=pairs, progress=progress)
        return score_notes(scores, notes, self.bundle.labels, self.bundle.thresholds)

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        table = format_metrics_table(metrics)
        by_frequency = format_frequency_table(metrics)
        if by_frequency:
            table += "\nF1 by train frequency of the code:\n\n" + by_frequency
        return table
