"""The saved system of kind ``rerank``: base coders and catalog retrieval, reranked by a learned model.

``medcoder train`` on a ``kind: rerank`` config writes it
(:mod:`medcoder.training.rerank`); ``medcoder.load`` opens it as a
:class:`RerankCoder`. For each note the base classifiers score their label
space, retrieval finds catalog codes through the note's mentions, the union of
their top-k codes are the candidates, the ranker orders them and the calibrator
(fitted on dev) turns its scores into probabilities. A code none of the signals
proposes is not scored. ``explain`` gives each code's evidence from every
signal that has some: the n-grams or attended words of the bases that explain
themselves, and the mention retrieval matched to the code's description
(each :class:`Evidence` names its ``source``).

Layout (paths relative to the folder)::

    config.json       format, kind "rerank", the config, features, k, threshold, metrics, timings, versions
    ranker.txt        the LightGBM model (its own text format)
    calibration.json  the calibrator fitted on dev
    bases/<name>/     each base classifier, a model bundle of its own
    retrieval/        encoder/ (sentence-transformers) and index/ (its catalog vectors), when retrieval is used
    results.md        the report of the run
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcoder.bundles import inside
from medcoder.config import DataConfig
from medcoder.config.base import validate
from medcoder.config.rerank import RerankConfig
from medcoder.data.records import Note
from medcoder.errors import BundleError, MedcoderError
from medcoder.evaluation.calibration import Calibrator
from medcoder.evaluation.report import format_systems_table
from medcoder.inference.base import (
    Coder,
    CodeScore,
    Evidence,
    NotePrediction,
    check_note_texts,
    check_per_note,
    refuse_pairs,
)
from medcoder.inference.load import load
from medcoder.inference.model import ModelCoder
from medcoder.io import read_json_file
from medcoder.progress import Update
from medcoder.registry import SYSTEMS
from medcoder.rerank.evaluate import evaluate_scores
from medcoder.rerank.features import RETRIEVAL, Candidates, FeatureBuilder, SplitSignals
from medcoder.rerank.lexical import CodeTexts, note_stems
from medcoder.rerank.ranker import Ranker
from medcoder.rerank.signals import NoteEvidence

# what the saved system needs besides numpy/pydantic/safetensors
RERANK_REQUIRES = ("lightgbm", "scikit-learn", "torch", "transformers", "sentence-transformers", "spacy", "negspacy")
_BATCH = 64


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    folder: str


class _Retrieval(BaseModel):
    encoder: str
    index: str
    encoder_fingerprint: str | None = None


class _Candidates(BaseModel):
    model_config = ConfigDict(extra="allow")
    k: int


class RerankHeader(BaseModel):
    """The parts of a rerank bundle's ``config.json`` that loading it needs."""

    model_config = ConfigDict(extra="allow")

    config: RerankConfig
    bases: dict[str, _Base]
    retrieval: _Retrieval | None = None
    features: list[str]
    candidates: _Candidates
    threshold: float


def _file(bundle: Path, name: str, what: str) -> Path:
    path = bundle / name
    if not path.is_file():
        raise BundleError(f"{bundle}: {what} ({name}) is missing")
    return path


def top_pairs(candidates: Candidates, scores: np.ndarray, *, k: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, gold flags, note) of each note's ``k`` best-scored candidates: what a coder is shown (ECE@20)."""
    if candidates.y is None:
        raise MedcoderError("calibration figures need candidates with gold labels")
    order = np.lexsort((-np.asarray(scores), candidates.note))
    note = candidates.note[order]
    position = np.arange(len(note)) - np.searchsorted(note, note, side="left")
    keep = order[position < k]
    return np.asarray(scores)[keep], candidates.y[keep], candidates.note[keep]


@SYSTEMS.register("rerank")
class RerankCoder(Coder):
    """Base coders + retrieval -> candidates -> features -> LightGBM ranker -> calibrated probabilities."""

    kind = "rerank"

    def __init__(
        self,
        parts: RerankHeader,
        bases: dict[str, ModelCoder],
        ranker: Ranker,
        calibrator: Calibrator,
        *,
        retrieval: tuple[Any, Any] | None,
        path: Path | None,
        header: dict[str, Any],
    ) -> None:
        super().__init__(path, header)
        self.parts, self.config = parts, parts.config
        self.bases, self.ranker, self.calibrator = bases, ranker, calibrator
        self.threshold, self.k = parts.threshold, parts.candidates.k
        first = next(iter(bases.values()))
        self.labels = first.bundle.labels
        self._label_codes = list(self.labels.codes)
        self._train_freq = np.array([self.labels.train_freq.get(c, 0) for c in self._label_codes], dtype=np.int64)
        descriptions = dict(zip(self._label_codes, self.labels.descriptions(), strict=True))
        self._descriptions = descriptions
        self.builder = FeatureBuilder(
            self._label_codes,
            self.labels.system,
            list(bases),
            retrieval=retrieval is not None,
            groups=self.config.features,
            code_texts=CodeTexts(self.labels.system, descriptions),
        )
        if self.builder.names != parts.features:
            raise BundleError(f"{path}: the bundle's features differ from the ones this medcoder computes")
        self.encoder, self.index = retrieval if retrieval is not None else (None, None)
        self.extractor = None
        if retrieval is not None or "mentions" in self.config.features:
            from medcoder.retrieval.mentions import MentionExtractor

            max_tokens = self.config.retrieval.mentions.max_tokens if self.config.retrieval is not None else 10
            self.extractor = MentionExtractor(max_tokens=max_tokens)
        extra = [c for c in (self.index.codes if self.index is not None else []) if c not in descriptions]
        self._codes = self._label_codes + extra
        self._column = {c: j for j, c in enumerate(self._codes)}

    @classmethod
    def load(cls, path: Path, header: dict[str, Any]) -> RerankCoder:
        source = path / "config.json"
        parts = validate(RerankHeader, header, source=str(source))
        bases = {}
        for name in (b.name for b in parts.config.bases):  # config.json's keys are sorted: the config's order counts
            if name not in parts.bases:
                raise BundleError(f"{source}: base {name!r} of the config has no folder in 'bases'")
            coder = load(inside(path, parts.bases[name].folder, f"its base {name!r}"))
            if not isinstance(coder, ModelCoder):
                raise BundleError(f"{source}: base {name!r} must be a model bundle, found a {coder.kind} system")
            bases[name] = coder
        codes = {tuple(c.codes) for c in bases.values()}
        if len(codes) != 1:
            raise BundleError(f"{source}: the base models' label spaces differ")
        retrieval = None
        if parts.retrieval is not None:
            from medcoder.retrieval.biencoder import BiEncoder
            from medcoder.retrieval.index import CodeIndex

            encoder = BiEncoder.load(
                str(inside(path, parts.retrieval.encoder, "its sentence encoder")),
                max_seq_length=parts.config.retrieval.max_seq_length if parts.config.retrieval else 64,
            )
            index_dir = inside(path, parts.retrieval.index, "its catalog index")
            index = CodeIndex.load(index_dir)
            if index.meta.get("encoder_fingerprint") != parts.retrieval.encoder_fingerprint:
                raise BundleError(
                    f"{index_dir}: this index was not built by the bundle's encoder; copy the whole folder again"
                )
            retrieval = (encoder, index)
        ranker_file = _file(path, "ranker.txt", "its ranker")
        ranker = Ranker.from_text(
            ranker_file.read_text(encoding="utf-8"),
            parts.features,
            objective=parts.config.ranker.objective,
            source=str(ranker_file),
        )
        calibration_file = _file(path, "calibration.json", "its calibration")
        calibrator = Calibrator.from_dict(read_json_file(calibration_file), source=str(calibration_file))
        return cls(parts, bases, ranker, calibrator, retrieval=retrieval, path=path, header=header)

    # ------------------------------------------------------------ scoring
    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        bases = header.get("bases") or {}
        first = next(iter(bases.values()), None)
        return path / str(first["folder"]) / "labels.json" if isinstance(first, dict) and "folder" in first else None

    @property
    def codes(self) -> list[str]:
        return self._codes

    def description(self, code: str) -> str | None:
        found = self._descriptions.get(code)
        if found is None and self.labels.system != "none":
            from medcoder.data.icd import describe

            found = describe(code, self.labels.system)
        return found

    def _evidence_of(
        self, texts: Sequence[str], extracted: Sequence[list[Any]] | None = None
    ) -> list[NoteEvidence] | None:
        if self.encoder is None:
            return None
        from medcoder.rerank.signals import note_evidence

        assert self.config.retrieval is not None and self.extractor is not None
        return note_evidence(
            self.encoder, self.index, self.extractor, texts, k=self.config.retrieval.k, extracted=extracted
        )

    def _score_batch(self, texts: Sequence[str]) -> tuple[list[dict[str, float]], list[NoteEvidence] | None]:
        """Per note ``{candidate code: calibrated probability}`` and the retrieval evidence."""
        scores = {name: coder.bundle.model.predict_scores(list(texts)) for name, coder in self.bases.items()}
        # each note's mentions are extracted once, for retrieval and for the mention features both
        extracted = [self.extractor.extract(t) for t in texts] if self.extractor is not None else None
        evidence = self._evidence_of(texts, extracted)
        freq = np.broadcast_to(self._train_freq, (len(texts), len(self._train_freq)))
        mentions = None
        if "mentions" in self.config.features:
            from medcoder.rerank.signals import note_mentions

            assert self.extractor is not None
            mentions = note_mentions(self.extractor, texts, extracted=extracted)
        signals = SplitSignals(note_stems(texts), scores, freq, evidence, mentions=mentions)
        # built at the run's largest k, then cut to the chosen one, exactly as the run built its candidates
        everything = self.builder.build(signals, max(self.config.candidates))
        candidates = everything.subset(self.k, range(len(self.builder.sources)), range(len(self.builder.names)))
        probs = self.calibrator(self.ranker.score(candidates))
        return candidates.per_note(probs), evidence

    def _batches(self, texts: Sequence[str], progress: Update | None) -> Any:
        for start in range(0, len(texts), _BATCH):
            yield start, *self._score_batch(list(texts[start : start + _BATCH]))
            if progress is not None:
                progress(min(start + _BATCH, len(texts)), len(texts))

    def scores(self, texts: Sequence[str], *, progress: Update | None = None) -> list[dict[str, float]]:
        """Per note ``{code: probability}`` over its candidates (the codes no signal proposed are not scored)."""
        check_note_texts(texts, "scores")
        return [row for _, rows, _ in self._batches(texts, progress) for row in rows]

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Probabilities float32 ``[n_notes, len(codes)]``; 0 for codes that were not candidates.

        With retrieval, ``codes`` spans the whole catalog (about 98k columns for ICD-10-CM):
        :meth:`scores` gives the same figures sparsely.
        """
        check_note_texts(texts, "predict_proba")
        refuse_pairs(pairs, "reranked")
        out = np.zeros((len(texts), len(self._codes)), dtype=np.float32)
        for i, row in enumerate(self.scores(texts, progress=progress)):
            for code, p in row.items():
                out[i, self._column[code]] = p
        return out

    # ------------------------------------------------------------ evidence
    def can_explain(self) -> bool:
        return self.encoder is not None or any(c.can_explain() for c in self.bases.values())

    def _explain(
        self,
        texts: Sequence[str],
        codes: Sequence[Sequence[str]],
        evidence: list[NoteEvidence] | None,
        top: int,
    ) -> list[dict[str, list[Evidence]]]:
        out: list[dict[str, list[Evidence]]] = [{c: [] for c in wanted} for wanted in codes]
        for name, coder in self.bases.items():
            if not coder.can_explain():
                continue
            label_codes = set(coder.codes)
            known = [[c for c in wanted if c in label_codes] for wanted in codes]
            for note, found in zip(out, coder.explain(texts, known, top=top), strict=True):
                for code, spans in found.items():
                    note[code] += [Evidence(s.start, s.end, s.text, s.weight, source=name) for s in spans]
        if evidence is not None:
            for text, note, found in zip(texts, out, evidence, strict=True):
                for code in note:
                    hit = found.get(code)
                    if hit is not None and hit.start >= 0:
                        span = Evidence(hit.start, hit.end, text[hit.start : hit.end], round(hit.best, 4), RETRIEVAL)
                        note[code].append(span)
        return out

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        """Per code, the spans behind it from every signal that has some (each names its ``source``)."""
        check_note_texts(texts, "explain")
        check_per_note(codes, texts, "code lists")
        return self._explain(texts, codes, self._evidence_of(texts), top)

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
        check_note_texts(texts, "predict")
        refuse_pairs(pairs, "reranked")
        check_per_note(ids, texts, "ids")
        if explain and not self.can_explain():
            raise MedcoderError("none of this system's signals gives evidence spans")
        results = []
        for start, rows, evidence in self._batches(texts, progress):
            shown = []
            for row in rows:
                ranked = sorted(row.items(), key=lambda cs: (-cs[1], cs[0]))
                shown.append(
                    [
                        (rank, c, p)
                        for rank, (c, p) in enumerate(ranked, start=1)
                        if p >= self.threshold or rank <= top_k
                    ]
                )
            batch_texts = list(texts[start : start + len(rows)])
            spans = self._explain(batch_texts, [[c for _, c, _ in s] for s in shown], evidence, 3) if explain else None
            for i, note_shown in enumerate(shown):
                results.append(
                    NotePrediction(
                        id=None if ids is None else ids[start + i],
                        codes=[
                            CodeScore(
                                code=c,
                                description=self.description(c),
                                probability=round(float(p), 6),
                                predicted=p >= self.threshold,
                                rank=rank,
                                evidence=None if spans is None else spans[i][c],
                            )
                            for rank, c, p in note_shown
                        ],
                    )
                )
        return results

    # ------------------------------------------------------------ evaluation
    def data_config(self) -> DataConfig:
        return self.config.data

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        """MAP, micro/macro-F1, P@8, recall@10 over all gold codes, MAP / recall@10 over gold codes unseen in train."""
        gold = [self.labels.map_labels(note.labels) for note in notes]
        scores = self.scores([n.text for n in notes], progress=progress)
        seen = {c for c, n in self.labels.train_freq.items() if n > 0}
        return evaluate_scores(
            scores, gold, threshold=self.threshold, seen=seen, train_codes=list(self.labels.train_freq)
        )

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        return format_systems_table({"reranker": metrics})
