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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcoder.bundles import inside
from medcoder.config import DataConfig
from medcoder.config.base import validate
from medcoder.config.rerank import RerankConfig
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError, MedcoderError
from medcoder.evaluation.calibration import Calibrator
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.base import Capabilities, Coder, Evidence, Scores
from medcoder.inference.model import ModelCoder
from medcoder.inference.parts import (
    RetrievalPart,
    RetrievalRecord,
    nest_bundle,
    new_bundle,
    read_calibration,
    required_file,
    write_calibration,
    write_header,
)
from medcoder.io import atomic_write_text
from medcoder.registry import SYSTEMS
from medcoder.rerank.features import RETRIEVAL, Candidates, FeatureBuilder, SplitSignals
from medcoder.rerank.lexical import note_stems
from medcoder.rerank.ranker import Ranker
from medcoder.rerank.signals import NoteEvidence

# what the saved system needs besides numpy/pydantic/safetensors
RERANK_REQUIRES = ("lightgbm", "scikit-learn", "torch", "transformers", "sentence-transformers", "spacy", "negspacy")


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    folder: str


class _Candidates(BaseModel):
    model_config = ConfigDict(extra="allow")
    k: int


class RerankHeader(BaseModel):
    """The parts of a rerank bundle's ``config.json`` that loading it needs."""

    model_config = ConfigDict(extra="allow")

    config: RerankConfig
    bases: dict[str, _Base]
    retrieval: RetrievalRecord | None = None
    features: list[str]
    candidates: _Candidates
    threshold: float


def top_pairs(candidates: Candidates, scores: np.ndarray, *, k: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, gold flags, note) of each note's ``k`` best-scored candidates: what a coder is shown (ECE@20)."""
    if candidates.y is None:
        raise MedcoderError("calibration figures need candidates with gold labels")
    order = np.lexsort((-np.asarray(scores), candidates.note))
    note = candidates.note[order]
    position = np.arange(len(note)) - np.searchsorted(note, note, side="left")
    keep = order[position < k]
    return np.asarray(scores)[keep], candidates.y[keep], candidates.note[keep]


def _agreed_first(spans: list[Evidence]) -> list[Evidence]:
    """Each span once (the first signal's), those more signals found first, else in the signals' order.

    Two bases pointing at the same words is one piece of evidence, not two; and a
    span several signals agree on is the one a coder should read first.
    """
    found: dict[tuple[int, int], list[Any]] = {}
    for position, span in enumerate(spans):
        entry = found.setdefault((span.start, span.end), [0, position, span])
        entry[0] += 1
    return [span for _, _, span in sorted(found.values(), key=lambda e: (-e[0], e[1]))]


@SYSTEMS.register("rerank", config=RerankConfig, trainer="medcoder.training.rerank:train_rerank")
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
        self.builder = FeatureBuilder.for_config(
            self.config,
            self._label_codes,
            self.labels.system,
            list(descriptions.values()),
            index=retrieval[1] if retrieval is not None else None,
        )
        if self.builder.names != parts.features:
            raise BundleError(f"{path}: the bundle's features differ from the ones this medcoder computes")
        self.encoder, self.index = retrieval if retrieval is not None else (None, None)
        self.extractor = None
        if retrieval is not None or "mentions" in self.config.features:
            from medcoder.retrieval.mentions import MentionExtractor, mention_catalog

            max_tokens = self.config.retrieval.mentions.max_tokens if self.config.retrieval is not None else 10
            self.extractor = MentionExtractor(max_tokens=max_tokens, catalog=mention_catalog(self.labels.system))
        proposed = self.builder.children.codes if self.builder.children is not None else []
        index_codes = self.index.codes if self.index is not None else []
        extra = [c for c in dict.fromkeys([*index_codes, *proposed]) if c not in descriptions]
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
            bases[name] = ModelCoder.open(inside(path, parts.bases[name].folder, f"its base {name!r}"))
        codes = {tuple(c.codes) for c in bases.values()}
        if len(codes) != 1:
            raise BundleError(f"{source}: the base models' label spaces differ")
        retrieval = None
        if parts.retrieval is not None:
            max_seq_length = parts.config.retrieval.max_seq_length if parts.config.retrieval else 64
            part = RetrievalPart.read(path, parts.retrieval, max_seq_length=max_seq_length)
            retrieval = (part.encoder, part.index)
        ranker_file = required_file(path, "ranker.txt", "its ranker")
        ranker = Ranker.from_text(
            ranker_file.read_text(encoding="utf-8"),
            parts.features,
            objective=parts.config.ranker.objective,
            source=str(ranker_file),
        )
        calibrator = read_calibration(path, required=True)
        assert calibrator is not None
        return cls(parts, bases, ranker, calibrator, retrieval=retrieval, path=path, header=header)

    @classmethod
    def save(
        cls,
        path: Path,
        *,
        config: RerankConfig,
        record: dict[str, Any],
        bases: dict[str, Path],
        ranker: Ranker,
        calibrator: Calibrator,
        retrieval: tuple[Any, Any] | None,
        report: Callable[[dict[str, Any]], str],
    ) -> None:
        """Write a rerank bundle at ``path`` atomically: the base model bundles (``{name: folder}``) and the
        retrieval part copied in (hard links where possible), the ranker, the calibrator, the run's ``record``
        and ``report(header)`` as results.md. ``retrieval``: (encoder, (index, its cache folder)) or None."""
        with new_bundle(path) as tmp:
            body = {
                "config": config.model_dump(mode="json"),
                **record,
                "bases": {
                    name: {**record["bases"][name], "folder": nest_bundle(folder, tmp, f"bases/{name}")}
                    for name, folder in bases.items()
                },
                "retrieval": None,
            }
            if retrieval is not None:
                encoder, (index, index_dir) = retrieval
                body["retrieval"] = RetrievalPart.write(tmp, encoder, index, index_dir)
            atomic_write_text(tmp / "ranker.txt", ranker.to_text())
            write_calibration(tmp, calibrator)
            header = write_header(tmp, cls.kind, body, requires=RERANK_REQUIRES)
            atomic_write_text(tmp / "results.md", report(header))

    # ------------------------------------------------------------ scoring
    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        bases = header.get("bases") or {}
        first = next(iter(bases.values()), None)
        return path / str(first["folder"]) / "labels.json" if isinstance(first, dict) and "folder" in first else None

    def label_space(self) -> LabelSpace:
        return self.labels

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
        self,
        texts: Sequence[str],
        extracted: Sequence[list[Any]] | None = None,
        keep_vectors: list[np.ndarray] | None = None,
    ) -> list[NoteEvidence] | None:
        if self.encoder is None:
            return None
        from medcoder.rerank.signals import note_evidence

        assert self.config.retrieval is not None and self.extractor is not None
        return note_evidence(
            self.encoder,
            self.index,
            self.extractor,
            texts,
            k=self.config.retrieval.k,
            extracted=extracted,
            keep_vectors=keep_vectors,
        )

    def _score(self, texts: Sequence[str]) -> tuple[list[dict[str, float]], list[NoteEvidence] | None]:
        """Per note ``{candidate code: calibrated probability}`` and the retrieval evidence."""
        scores = {name: coder.bundle.model.predict_scores(list(texts)) for name, coder in self.bases.items()}
        # each note's mentions are extracted once, for retrieval and for the mention features both
        extracted = [self.extractor.extract(t) for t in texts] if self.extractor is not None else None
        vectors: list[np.ndarray] = []
        evidence = self._evidence_of(texts, extracted, keep_vectors=vectors)
        freq = np.broadcast_to(self._train_freq, (len(texts), len(self._train_freq)))
        mentions = None
        if "mentions" in self.config.features:
            from medcoder.rerank.signals import note_mentions

            assert self.extractor is not None
            mentions = note_mentions(self.extractor, texts, extracted=extracted)
        signals = SplitSignals(
            note_stems(texts), scores, freq, evidence, mentions=mentions, mention_vectors=vectors if evidence else None
        )
        # built at the run's largest k, then cut to the chosen one, exactly as the run built its candidates
        everything = self.builder.build(signals, max(self.config.candidates))
        candidates = everything.subset(self.k, range(len(self.builder.sources)), range(len(self.builder.names)))
        probs = self.calibrator(self.ranker.score(candidates))
        return candidates.per_note(probs), evidence

    def score_batch(self, texts: Sequence[str], pairs: Sequence[str] | None) -> Scores:
        """Calibrated probabilities of each note's candidates (a code no signal proposed is not ranked)."""
        rows, evidence = self._score(texts)
        column = self._column
        return Scores(sparse=[{column[c]: p for c, p in row.items()} for row in rows], context=evidence)

    @property
    def decision(self) -> Thresholds:
        return Thresholds("global", float(self.threshold))

    # ------------------------------------------------------------ evidence
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            explain=self.encoder is not None or any(c.can_explain() for c in self.bases.values()),
            why_not_explain="none of this system's signals gives evidence spans",
        )

    def evidence(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], top: int, context: Any
    ) -> list[dict[str, list[Evidence]]]:
        """Per code, the spans behind it from every signal that has some (each names its ``source``); a span
        several signals found comes once, before the spans only one found."""
        evidence = context if context is not None else self._evidence_of(texts)
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
        return [{code: _agreed_first(spans) for code, spans in note.items()} for note in out]

    # ------------------------------------------------------------ evaluation
    def data_config(self) -> DataConfig:
        return self.config.data

    def test_metrics(self) -> dict[str, Any]:
        """The reranker's test figures (its row of the run's table; ``dev_map`` is the ranker's own dev figure)."""
        row = (self.header.get("metrics") or {}).get("reranker") or {}
        return {key: value for key, value in row.items() if key != "dev_map"}
