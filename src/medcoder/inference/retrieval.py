"""The saved system of kind ``retrieval``: a bi-encoder over the catalog, fused with a classifier (optional).

``medcoder retrieval`` writes it (:func:`save_retrieval_bundle`); ``medcoder.load``
opens it as a :class:`RetrievalCoder`, which codes notes like any other system:
codes ranked by fused score, ``predicted`` above the threshold tuned on dev, and
as evidence the note's mentions that matched the code's description (``weight``
= cosine similarity). Codes the classifier never saw can appear in the ranking
(they come from the whole catalog's index), and up to ``novel_top`` of them are
listed apart as ``new_codes`` when their cosine reaches the dev-tuned threshold
(``probability`` there is the cosine).

Layout (every path relative to the folder, so it can be moved)::

    config.json    format, kind "retrieval", the retrieval config, fusion tuned on dev, metrics, timings, versions
    biencoder/     the sentence-transformers model (safetensors)
    index/         the catalog's description vectors for that encoder (medcoder.code_index.v1)
    classifier/    the classifier bundle it fuses with (absent: retrieval alone)
    results.md     the report of the run
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcoder.bundles import bundle_header, check_bundle_target, inside, library_versions
from medcoder.config import DataConfig
from medcoder.config.base import validate
from medcoder.config.retrieval import RetrievalConfig
from medcoder.data.icd import CATALOG_PACKAGES, catalog_entries, normalize_code
from medcoder.data.records import Note
from medcoder.errors import BundleError
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
from medcoder.io import atomic_directory, atomic_write_json, atomic_write_text, link_or_copy_tree
from medcoder.progress import Update
from medcoder.registry import SYSTEMS
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.fusion import (
    Hit,
    SparseScores,
    dense_to_sparse,
    fuse,
    novel_suggestions,
    open_set_report,
    retrieve,
    similarities,
)
from medcoder.retrieval.index import CodeIndex
from medcoder.retrieval.mentions import MentionExtractor

logger = logging.getLogger(__name__)

_BATCH = 64
# what the saved system needs besides numpy/pydantic/safetensors
_REQUIRES = ("torch", "transformers", "tokenizers", "sentence-transformers", "spacy", "negspacy")


class _IndexRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    folder: str
    encoder_fingerprint: str  # of the bi-encoder the vectors were made with


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
    encoder: str
    index: _IndexRecord
    classifier: str | None = None
    fusion: _FusionRecord


@SYSTEMS.register("retrieval")
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
        encoder_dir = inside(path, parts.encoder, "its bi-encoder")
        encoder = BiEncoder.load(str(encoder_dir), max_seq_length=parts.config.max_seq_length)
        index_dir = inside(path, parts.index.folder, "its catalog index")
        index = CodeIndex.load(index_dir)
        if index.meta.get("encoder_fingerprint") != parts.index.encoder_fingerprint:
            raise BundleError(
                f"{index_dir}: this index was not built by the bundle's bi-encoder; "
                "copy the whole folder again, or run `medcoder retrieval` again"
            )
        classifier = None
        if parts.classifier is not None:
            loaded = load(inside(path, parts.classifier, "its classifier"))
            if not isinstance(loaded, ModelCoder):
                raise BundleError(f"{source}: 'classifier' must be a model bundle, found a {loaded.kind} system")
            classifier = loaded
        return cls(
            encoder, index, parts.config, parts.fusion.model_dump(), classifier=classifier, path=path, header=header
        )

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

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Fused scores float32 ``[n_notes, len(codes)]`` (0 where nothing scored a code).

        ``codes`` is the whole index (about 98k columns for ICD-10-CM: 0.4 MB a note) and the classifier's codes.
        """
        check_note_texts(texts, "predict_proba")
        refuse_pairs(pairs, "retrieval")
        out = np.zeros((len(texts), len(self._codes)), dtype=np.float32)
        for start, fused, _, _ in self._scored_batches(texts, progress):
            for row, note in enumerate(fused, start=start):
                for code, score in note.items():
                    out[row, self._column[code]] = score
        return out

    def _scored_batches(
        self, texts: Sequence[str], progress: Update | None
    ) -> Iterator[tuple[int, list[SparseScores], list[SparseScores], list[dict[str, Hit]]]]:
        """:meth:`scores` of ``texts`` a batch at a time: (first note's position, fused, new codes, hits)."""
        for start in range(0, len(texts), _BATCH):
            yield start, *self.scores(list(texts[start : start + _BATCH]))
            if progress is not None:
                progress(min(start + _BATCH, len(texts)), len(texts))

    def can_explain(self) -> bool:
        return True

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        """The mention whose embedding matched each code's description best (none: no mention retrieved it)."""
        check_note_texts(texts, "explain")
        check_per_note(codes, texts, "code lists")
        hits = self._hits(texts)  # the evidence needs no classifier scores
        return [
            {code: _evidence(note_hits.get(code)) for code in wanted}
            for wanted, note_hits in zip(codes, hits, strict=True)
        ]

    def _code(self, code: str, score: float, rank: int, predicted: bool, hit: Hit | None) -> CodeScore:
        return CodeScore(
            code=code,
            description=self.description(code),
            probability=round(float(score), 6),
            predicted=predicted,
            rank=rank,
            evidence=_evidence(hit),
        )

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
        """Per note: the codes above the threshold plus the ``top_k`` best-ranked, each with its matching mention.

        The evidence comes with every code whether ``explain`` is asked or not: finding it is how codes are scored.
        """
        del explain
        check_note_texts(texts, "predict")
        refuse_pairs(pairs, "retrieval")
        check_per_note(ids, texts, "ids")
        results = []
        for start, fused, new, evidence in self._scored_batches(texts, progress):
            for row, (scores, new_codes, hits) in enumerate(zip(fused, new, evidence, strict=True)):
                ranked = sorted(scores.items(), key=lambda item: -item[1])
                codes = []
                for rank, (code, score) in enumerate(ranked, start=1):
                    if score < self.threshold and rank > top_k:
                        break
                    codes.append(self._code(code, score, rank, score >= self.threshold, hits.get(code)))
                suggested = [
                    self._code(code, cosine, rank, True, hits.get(code))
                    for rank, (code, cosine) in enumerate(new_codes.items(), start=1)
                ]
                note_id = None if ids is None else ids[start + row]
                results.append(
                    NotePrediction(
                        id=note_id, codes=codes, new_codes=suggested if self.classifier is not None else None
                    )
                )
        return results

    def data_config(self) -> DataConfig:
        return self.config.data

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        """Open-set figures (any catalog code can be ranked) over all gold codes and those the classifier never saw."""
        system = self.index.meta.get("system", "icd10cm")
        gold = [list(dict.fromkeys(normalize_code(c, system) for c in note.labels)) for note in notes]
        fused = [note for _, batch, _, _ in self._scored_batches([n.text for n in notes], progress) for note in batch]
        return open_set_report(fused, gold, self._known, threshold=self.threshold)

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        every, unseen = metrics["all"], metrics["unseen"]
        f1 = f"{every['micro_f1']:.3f}" if "micro_f1" in every else "—"
        return (
            "| MAP | micro-F1 | recall@10 | MAP (gold unseen by the classifier) | recall@10 (unseen) |\n"
            "|---|---|---|---|---|\n"
            f"| {every['map']:.3f} | {f1} | {every['recall@10']:.3f} | {unseen['map']:.3f} | "
            f"{unseen['recall@10']:.3f} |\n"
        )


def _evidence(hit: Hit | None) -> list[Evidence]:
    if hit is None:
        return []
    cosine, mention = hit
    return [Evidence(mention.start, mention.end, mention.text, round(cosine, 4))]


def save_retrieval_bundle(
    path: str | Path,
    *,
    config: RetrievalConfig,
    encoder_dir: Path,
    index_dir: Path,
    classifier_dir: Path | None,
    fusion: dict[str, Any],
    record: dict[str, Any],
    report: str,
) -> None:
    """Write a retrieval bundle at ``path`` atomically, its parts copied (hard-linked where possible) inside it.

    ``encoder_dir`` is the saved bi-encoder, ``index_dir`` its catalog index,
    ``classifier_dir`` the classifier bundle; ``record`` holds the run's
    metrics, training, timing and the like, ``report`` the results.md text.
    """
    check_bundle_target(path)
    header = {
        **bundle_header("retrieval"),
        "config": config.model_dump(mode="json"),
        "encoder": "biencoder",
        "index": {"folder": "index", **record.pop("index", {})},
        "classifier": "classifier" if classifier_dir is not None else None,
        "fusion": fusion,
        **record,
        "info": {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions([*_REQUIRES, CATALOG_PACKAGES[config.index.system]]),
        },
    }
    with atomic_directory(path) as tmp:
        link_or_copy_tree(encoder_dir, tmp / "biencoder")
        link_or_copy_tree(index_dir, tmp / "index")
        if classifier_dir is not None:
            link_or_copy_tree(classifier_dir, tmp / "classifier")
        atomic_write_json(tmp / "config.json", header)
        atomic_write_text(tmp / "results.md", report)
