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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.bundles import bundle_header, check_bundle_target, library_versions
from medcoder.config import DataConfig
from medcoder.config.base import validate
from medcoder.config.retrieval import RetrievalConfig
from medcoder.data.icd import catalog_entries, normalize_code
from medcoder.data.records import Note
from medcoder.errors import BundleError, MedcoderError
from medcoder.inference.base import Coder, CodeScore, Evidence, NotePrediction, check_note_texts
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
from medcoder.retrieval.index import CodeIndex, cached_index, default_cache_dir
from medcoder.retrieval.mentions import MentionExtractor

logger = logging.getLogger(__name__)

_BATCH = 64
# what the saved system needs besides numpy/pydantic/safetensors
_REQUIRES = ("torch", "transformers", "tokenizers", "sentence-transformers", "spacy", "negspacy", "simple-icd-10-cm")


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
        self._column = {code: j for j, code in enumerate(index.codes)}

    @classmethod
    def load(cls, path: Path, header: dict[str, Any], *, progress: Update | None = None) -> RetrievalCoder:
        source = path / "config.json"
        config = validate(RetrievalConfig, header.get("config"), source=f"{source}: config")
        fusion = header.get("fusion")
        if not isinstance(fusion, dict) or not isinstance(fusion.get("threshold"), float):
            raise BundleError(f"{source}: 'fusion' with a 'threshold' (a number) is required")
        folders = {"encoder": header.get("encoder"), "index": (header.get("index") or {}).get("folder")}
        for key, folder in folders.items():
            if not isinstance(folder, str) or Path(folder).is_absolute() or ".." in Path(folder).parts:
                raise BundleError(f"{source}: {key!r} must name a folder inside the bundle, got {folder!r}")
        if not (path / folders["encoder"]).is_dir():
            raise BundleError(f"{path}: its bi-encoder folder {folders['encoder']}/ is missing")
        encoder = BiEncoder.load(str(path / folders["encoder"]), max_seq_length=config.max_seq_length)
        index = _open_index(path / folders["index"], encoder, config, progress)
        classifier = None
        if header.get("classifier"):
            classifier_dir = path / str(header["classifier"])
            if not classifier_dir.is_dir():
                raise BundleError(f"{path}: its classifier folder {header['classifier']}/ is missing")
            classifier = ModelCoder.load(classifier_dir, {"kind": "model"})
        return cls(encoder, index, config, fusion, classifier=classifier, path=path, header=header)

    # ------------------------------------------------------------ contract
    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        """The classifier's label space (codes the fusion ranks beyond it come from the whole catalog)."""
        return path / str(header["classifier"]) / "labels.json" if header.get("classifier") else None

    @property
    def codes(self) -> list[str]:
        return self.index.codes

    def description(self, code: str) -> str | None:
        return self._descriptions.get(code)

    def scores(self, texts: Sequence[str]) -> tuple[list[SparseScores], list[SparseScores], list[dict[str, Hit]]]:
        """Per note: fused ``{code: score}``, new-code suggestions ``{code: cosine}``, each code's (cosine, mention)."""
        hits = retrieve(self.encoder, self.index, [self.extractor.codable(t) for t in texts], k=self.config.search.k)
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

    def predict_proba(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, progress: Update | None = None
    ) -> np.ndarray:
        """Fused scores float32 ``[n_notes, len(codes)]`` over the whole index (0 where nothing scored a code)."""
        check_note_texts(texts, "predict_proba")
        if pairs is not None:
            raise MedcoderError("a retrieval system codes single notes, not pairs")
        out = np.zeros((len(texts), len(self.index.codes)), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            fused, _, _ = self.scores(list(texts[start : start + _BATCH]))
            for row, note in enumerate(fused, start=start):
                for code, score in note.items():
                    out[row, self._column[code]] = score
            if progress is not None:
                progress(min(start + _BATCH, len(texts)), len(texts))
        return out

    def can_explain(self) -> bool:
        return True

    def explain(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], *, top: int = 3
    ) -> list[dict[str, list[Evidence]]]:
        """The mention whose embedding matched each code's description best (none: no mention retrieved it)."""
        check_note_texts(texts, "explain")
        if len(codes) != len(texts):
            raise MedcoderError(f"{len(codes)} code lists for {len(texts)} texts")
        _, _, hits = self.scores(list(texts))
        return [
            {code: _evidence(note_hits.get(code)) for code in wanted}
            for wanted, note_hits in zip(codes, hits, strict=True)
        ]

    def _code(self, code: str, score: float, rank: int, predicted: bool, hit: Hit | None) -> CodeScore:
        return CodeScore(
            code=code,
            description=self._descriptions.get(code),
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
        if pairs is not None:
            raise MedcoderError("a retrieval system codes single notes, not pairs")
        if ids is not None and len(ids) != len(texts):
            raise MedcoderError(f"{len(ids)} ids for {len(texts)} texts")
        results = []
        for start in range(0, len(texts), _BATCH):
            batch = list(texts[start : start + _BATCH])
            fused, new, evidence = self.scores(batch)
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
            if progress is not None:
                progress(min(start + _BATCH, len(texts)), len(texts))
        return results

    def data_config(self) -> DataConfig:
        return self.config.data

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        """Open-set figures (any catalog code can be ranked) over all gold codes and those the classifier never saw."""
        system = self.index.meta.get("system", "icd10cm")
        gold = [list(dict.fromkeys(normalize_code(c, system) for c in note.labels)) for note in notes]
        fused: list[SparseScores] = []
        texts = [note.text for note in notes]
        for start in range(0, len(texts), _BATCH):
            fused += self.scores(texts[start : start + _BATCH])[0]
            if progress is not None:
                progress(min(start + _BATCH, len(texts)), len(texts))
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


def _open_index(folder: Path, encoder: BiEncoder, config: RetrievalConfig, progress: Update | None) -> CodeIndex:
    """The bundle's own index when it matches its encoder; else the catalog embedded again (cached)."""
    fingerprint = encoder.fingerprint()
    if (folder / "index.json").is_file():
        index = CodeIndex.load(folder)
        if index.meta.get("encoder_fingerprint") == fingerprint:
            return index
        logger.warning("%s: the index was built by another encoder; embedding the catalog again", folder)
    else:
        logger.warning("%s: no index in the bundle; embedding the catalog again", folder)
    cache = Path(config.index.cache_dir) if config.index.cache_dir else default_cache_dir()
    index, _ = cached_index(
        encoder.encode,
        fingerprint,
        cache,
        system=config.index.system,
        leaves_only=config.index.leaves_only,
        prefixes=config.index.prefixes,
        progress=progress,
    )
    return index


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
        "info": {"created": datetime.now(UTC).isoformat(timespec="seconds"), "versions": library_versions(_REQUIRES)},
    }
    with atomic_directory(path) as tmp:
        link_or_copy_tree(encoder_dir, tmp / "biencoder")
        link_or_copy_tree(index_dir, tmp / "index")
        if classifier_dir is not None:
            link_or_copy_tree(classifier_dir, tmp / "classifier")
        atomic_write_json(tmp / "config.json", header)
        atomic_write_text(tmp / "results.md", report)
