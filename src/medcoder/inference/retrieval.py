"""The saved system of kind ``retrieval``: a bi-encoder over the catalog, fused with a classifier (optional).

``medcoder retrieval`` writes it (:meth:`RetrievalCoder.save`); ``medcoder.load``
opens it as a :class:`RetrievalCoder`, which codes notes like any other system:
codes ranked by fused score, ``predicted`` above the threshold tuned on dev, and
as evidence the note's mentions that matched the code's description (``weight``
= cosine similarity). Codes the classifier never saw can appear in the ranking
(they come from the whole catalog's index), and up to ``novel_top`` of them are
listed apart as ``new_codes`` when their cosine reaches the dev-tuned threshold
(``probability`` there is the cosine).

Layout (every path relative to the folder, so it can be moved; the parts of :mod:`medcoder.inference.parts`)::

    config.json        format, kind "retrieval", the retrieval config, fusion tuned on dev, metrics, timings, versions
    retrieval/encoder/ the sentence-transformers model (safetensors)
    retrieval/index/   the catalog's description vectors for that encoder (medcoder.code_index.v1)
    classifier/        the classifier bundle it fuses with (absent: retrieval alone)
    results.md         the report of the run

Bundles written before the parts had one layout (``biencoder/`` and ``index/`` at the top) still load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from medcoder.bundles import inside
from medcoder.config import DataConfig
from medcoder.config.base import validate
from medcoder.config.retrieval import RetrievalConfig
from medcoder.data.icd import CATALOG_PACKAGES, catalog_entries, normalize_code
from medcoder.data.records import Note
from medcoder.errors import BundleError
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.base import Capabilities, Coder, Evidence, Scores
from medcoder.inference.load import load
from medcoder.inference.model import ModelCoder
from medcoder.inference.parts import RetrievalPart, RetrievalRecord, nest_bundle, new_bundle, write_header
from medcoder.io import atomic_write_text
from medcoder.registry import SYSTEMS
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.fusion import (
    Hit,
    SparseScores,
    dense_to_sparse,
    fuse,
    novel_suggestions,
    retrieve,
    similarities,
)
from medcoder.retrieval.index import CodeIndex
from medcoder.retrieval.mentions import MentionExtractor

logger = logging.getLogger(__name__)

# what the saved system needs besides numpy/pydantic/safetensors
_REQUIRES = ("torch", "transformers", "tokenizers", "sentence-transformers", "spacy", "negspacy")


class _FusionRecord(BaseModel):
    model_config = ConfigDict(extra="allow")  # the dev grid and sweeps, for the report

    threshold: float
    weight: float = 1.0
    novel_weight: float = 1.0
    floor: float = 0.0
    novel_threshold: float = 1.0
    novel_top: int = 0


class RetrievalHeader(BaseModel):
    """The parts of a retrieval bundle's ``config.json`` that loading it needs (the rest is the run's record)."""

    model_config = ConfigDict(extra="allow")

    config: RetrievalConfig
    retrieval: RetrievalRecord
    classifier: str | None = None
    fusion: _FusionRecord

    @model_validator(mode="before")
    @classmethod
    def _older_layout(cls, data: Any) -> Any:
        """Before the parts had one layout: ``"encoder": "biencoder"``, ``"index": {"folder": "index", ...}``."""
        if isinstance(data, dict) and "retrieval" not in data and isinstance(data.get("encoder"), str):
            index = data.get("index") if isinstance(data.get("index"), dict) else {}
            record = {
                "encoder": data["encoder"],
                "index": index.get("folder"),
                "encoder_fingerprint": index.get("encoder_fingerprint"),
            }
            return {**data, "retrieval": record}
        return data


@SYSTEMS.register("retrieval", config=RetrievalConfig, trainer="medcoder.training.retrieval:train_retrieval")
class RetrievalCoder(Coder):
    """A fine-tuned bi-encoder, the catalog index, an optional classifier and the fusion tuned on dev."""

    kind = "retrieval"

    def __init__(
        self,
        encoder: BiEncoder,
        index: CodeIndex,
        config: RetrievalConfig,
        fusion: dict[str, Any],
        *,
        classifier: ModelCoder | None = None,
        path: Path | None = None,
        header: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, header or {"kind": "retrieval"})
        self.encoder, self.index, self.config, self.classifier = encoder, index, config, classifier
        self.weight = fusion.get("weight", 1.0)
        self.novel_weight = fusion.get("novel_weight", 1.0)
        self.floor = fusion.get("floor", 0.0)
        self.threshold = fusion["threshold"]
        self.novel_threshold = fusion.get("novel_threshold", 1.0)
        self.novel_top = fusion.get("novel_top", 0) if classifier is not None else 0
        self._known = set(classifier.codes) if classifier is not None else set()
        self.extractor = MentionExtractor(max_tokens=config.mentions.max_tokens)
        codes, descriptions = catalog_entries(index.meta.get("system", "icd10cm"))
        self._descriptions = dict(zip(codes, descriptions, strict=True))
        # the index's codes, then those only the classifier knows (codes coded data uses that the catalog lacks)
        indexed = set(index.codes)
        self._codes = list(index.codes) + [c for c in (classifier.codes if classifier else []) if c not in indexed]
        self._column = {code: j for j, code in enumerate(self._codes)}

    @classmethod
    def load(cls, path: Path, header: dict[str, Any]) -> RetrievalCoder:
        source = path / "config.json"
        parts = validate(RetrievalHeader, header, source=str(source))
        retrieval = RetrievalPart.read(path, parts.retrieval, max_seq_length=parts.config.max_seq_length)
        classifier = None
        if parts.classifier is not None:
            loaded = load(inside(path, parts.classifier, "its classifier"))
            if not isinstance(loaded, ModelCoder):
                raise BundleError(f"{source}: 'classifier' must be a model bundle, found a {loaded.kind} system")
            classifier = loaded
        return cls(
            retrieval.encoder,
            retrieval.index,
            parts.config,
            parts.fusion.model_dump(),
            classifier=classifier,
            path=path,
            header=header,
        )

    @classmethod
    def save(
        cls,
        path: str | Path,
        *,
        config: RetrievalConfig,
        encoder: BiEncoder,
        index: CodeIndex,
        index_dir: Path | None,
        classifier_dir: Path | None,
        fusion: dict[str, Any],
        record: dict[str, Any],
        report: str,
    ) -> None:
        """Write a retrieval bundle at ``path`` atomically, its parts copied (hard-linked where possible) inside it.

        ``index_dir``: the index's folder (a cache) when on disk; ``classifier_dir`` the classifier bundle;
        ``record`` holds the run's metrics, training, timing and the like, ``report`` the results.md text.
        """
        with new_bundle(path) as tmp:
            body = {
                "config": config.model_dump(mode="json"),
                "retrieval": RetrievalPart.write(tmp, encoder, index, index_dir),
                "classifier": nest_bundle(classifier_dir, tmp, "classifier") if classifier_dir is not None else None,
                "fusion": fusion,
                **record,
            }
            write_header(tmp, cls.kind, body, requires=[*_REQUIRES, *CATALOG_PACKAGES[config.index.system]])
            atomic_write_text(tmp / "results.md", report)

    # ------------------------------------------------------------ contract
    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        """The classifier's label space (codes the fusion ranks beyond it come from the whole catalog)."""
        return path / str(header["classifier"]) / "labels.json" if header.get("classifier") else None

    @property
    def codes(self) -> list[str]:
        return self._codes

    def description(self, code: str) -> str | None:
        found = self._descriptions.get(code)
        return found if found is not None or self.classifier is None else self.classifier.description(code)

    @property
    def label_system(self) -> str:
        return str(self.index.meta.get("system", "icd10cm"))

    @property
    def decision(self) -> Thresholds:
        return Thresholds("global", float(self.threshold))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(explain=True, new_codes=self.classifier is not None)

    def test_metrics(self) -> dict[str, Any]:
        metrics = self.header.get("metrics") or {}
        return metrics.get("fused" if self.classifier is not None else "retrieval") or {}

    def scores(self, texts: Sequence[str]) -> tuple[list[SparseScores], list[SparseScores], list[dict[str, Hit]]]:
        """Per note: fused ``{code: score}``, new-code suggestions ``{code: cosine}``, each code's (cosine, mention)."""
        hits = self._hits(texts)
        retrieval = similarities(hits)
        if self.classifier is None:
            return retrieval, [{} for _ in texts], hits
        probs = dense_to_sparse(
            self.classifier.predict_proba(list(texts)), self.classifier.codes, top=self.config.fusion.classifier_top
        )
        fused = fuse(
            probs, retrieval, weight=self.weight, floor=self.floor, novel_weight=self.novel_weight, known=self._known
        )
        new = novel_suggestions(retrieval, self._known, threshold=self.novel_threshold, top=self.novel_top)
        return fused, new, hits

    def _hits(self, texts: Sequence[str]) -> list[dict[str, Hit]]:
        """Per note, ``{code: (best cosine, its mention)}`` of the codes its codable mentions retrieve."""
        return retrieve(self.encoder, self.index, [self.extractor.codable(t) for t in texts], k=self.config.search.k)

    def score_batch(self, texts: Sequence[str], pairs: Sequence[str] | None) -> Scores:
        """Fused scores of the codes the classifier or the note's mentions reach; the hits are the evidence."""
        fused, new, hits = self.scores(texts)
        column = self._column
        return Scores(
            sparse=[{column[code]: score for code, score in note.items()} for note in fused],
            new_codes=[list(note.items()) for note in new],
            context=hits,
        )

    def evidence(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], top: int, context: Any
    ) -> list[dict[str, list[Evidence]]]:
        """The mention whose embedding matched each code's description best (none: no mention retrieved it)."""
        hits = context if context is not None else self._hits(texts)  # the evidence needs no classifier scores
        return [
            {code: _evidence(note_hits.get(code)) for code in wanted}
            for wanted, note_hits in zip(codes, hits, strict=True)
        ]

    def data_config(self) -> DataConfig:
        return self.config.data

    def gold(self, notes: Sequence[Note]) -> list[list[str]]:
        """Gold codes in the catalog's own spelling (any catalog code can be ranked, not only the classifier's)."""
        return [list(dict.fromkeys(normalize_code(c, self.label_system) for c in note.labels)) for note in notes]

    def seen_codes(self) -> set[str]:
        """Unseen gold codes are the ones the classifier never saw (none without a classifier)."""
        return self._known

    def train_codes(self) -> list[str] | None:
        return None  # the open-set figures of retrieval: no macro-F1 over a train label space


def _evidence(hit: Hit | None) -> list[Evidence]:
    if hit is None:
        return []
    cosine, mention = hit
    return [Evidence(mention.start, mention.end, mention.text, round(cosine, 4))]
