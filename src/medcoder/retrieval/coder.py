"""Code new notes with a ``medcoder retrieval`` output folder: classifier + retrieval, fused.

``RetrievalCoder.from_dir(path).predict(texts)`` gives the same
:class:`~medcoder.inference.predictor.NotePrediction` records as a bundle's
``Predictor``: codes ranked by fused score, ``predicted`` above the threshold tuned
on dev, and as evidence the note's mentions that matched the code's description
(``weight`` = cosine similarity). Codes the classifier never saw can appear in the
ranking (they come from the whole catalog's index), and up to ``novel_top`` of them
are listed apart as ``new_codes`` when their cosine reaches the dev-tuned threshold
(``probability`` there is the cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcoder.data.icd import catalog_entries
from medcoder.errors import InputError, MedcoderError
from medcoder.inference.predictor import CodeScore, Evidence, NotePrediction, check_note_texts
from medcoder.io import read_json_file
from medcoder.models.retrieval import CodeIndex, cached_index
from medcoder.progress import Update
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.fusion import SparseScores, dense_to_sparse, fuse, novel_suggestions
from medcoder.retrieval.mentions import Mention, MentionExtractor

RESULT_FORMAT = "medcoder.retrieval_run.v1"
Hit = tuple[float, Mention]  # (cosine, the mention) behind a retrieved code


def retrieve(encoder: BiEncoder, index: CodeIndex, mentions: Sequence[Sequence[Mention]], *, k: int) -> list[
        dict[str, Hit]]:
    """Per note, ``{code: (best cosine, its mention)}`` over the top ``k`` codes of each of its mentions."""
    vectors = encoder.encode([m.text for note in mentions for m in note])
    notes: list[dict[str, Hit]] = []
    offset = 0
    for note in mentions:
        best: dict[str, Hit] = {}
        if note:
            top, sims = index.search(vectors[offset : offset + len(note)], k)
            for mention, row, row_sims in zip(note, top.tolist(), sims.tolist(), strict=True):
                for i, sim in zip(row, row_sims, strict=True):
                    code = index.codes[i]
                    if code not in best or sim > best[code][0]:
                        best[code] = (float(sim), mention)
        offset += len(note)
        notes.append(best)
    return notes


def similarities(hits: Sequence[dict[str, Hit]]) -> list[SparseScores]:
    """``{code: cosine}`` per note from :func:`retrieve`'s hits."""
    return [{code: sim for code, (sim, _) in note.items()} for note in hits]


class RetrievalCoder:
    """A fine-tuned bi-encoder, the catalog index, an optional classifier and the fusion tuned on dev."""

    def __init__(self, encoder: BiEncoder, index: CodeIndex, *, classifier: Any = None, weight: float = 1.0,
                 novel_weight: float = 1.0, floor: float = 0.5, threshold: float = 0.5, k: int = 10,
                 max_tokens: int = 10, classifier_top: int | None = None, novel_threshold: float = 1.0,
                 novel_top: int = 0) -> None:
        self.encoder, self.index, self.classifier = encoder, index, classifier
        self.weight, self.novel_weight, self.floor = weight, novel_weight, floor
        self.threshold, self.k, self.classifier_top = threshold, k, classifier_top
        self._known = set(classifier.codes) if classifier is not None else set()
        self.novel_threshold, self.novel_top = novel_threshold, novel_top if classifier is not None else 0
        self.extractor = MentionExtractor(max_tokens=max_tokens)
        codes, descriptions = catalog_entries(index.meta.get("system", "icd10cm"))
        self._descriptions = dict(zip(codes, descriptions, strict=True))

    @classmethod
    def from_dir(cls, path: str | Path, *, progress: Update | None = None) -> RetrievalCoder:
        """Open a ``medcoder retrieval`` output folder (the index is rebuilt if its cache is gone)."""
        from medcoder.config.base import validate
        from medcoder.config.retrieval import RetrievalConfig

        folder = Path(path)
        source = folder / "retrieval.json"
        result = read_json_file(source)
        if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
            raise InputError(f"{source}: not a medcoder retrieval run (expected {RESULT_FORMAT!r})")
        config = validate(RetrievalConfig, result.get("config"), source=f"{source}: config")
        index_folder = (result.get("index") or {}).get("folder")
        if not isinstance(index_folder, str) or not isinstance(result.get("retrieval_threshold"), float):
            raise InputError(f"{source}: 'index.folder' (a string) and 'retrieval_threshold' (a number) are required")
        encoder_dir = folder / "biencoder"
        encoder = BiEncoder.load(str(encoder_dir) if encoder_dir.is_dir() else config.encoder,
                                 max_seq_length=config.max_seq_length)
        index, _ = cached_index(encoder.encode, encoder.fingerprint(), index_folder, system=config.index.system,
                                leaves_only=config.index.leaves_only, prefixes=config.index.prefixes,
                                progress=progress)
        classifier = None
        fusion = result.get("fusion") or {}
        if result.get("classifier_dir"):
            from medcoder.inference.predictor import Predictor

            if not Path(result["classifier_dir"]).is_dir():
                raise InputError(f"{source}: its classifier {result['classifier_dir']} is gone")
            classifier = Predictor.from_dir(result["classifier_dir"])
        return cls(encoder, index, classifier=classifier, weight=fusion.get("weight", 1.0),
                   novel_weight=fusion.get("novel_weight", 1.0), floor=fusion.get("floor", 0.0),
                   threshold=fusion.get("threshold", result["retrieval_threshold"]), k=config.search.k,
                   max_tokens=config.mentions.max_tokens, classifier_top=config.fusion.classifier_top,
                   novel_threshold=fusion.get("novel_threshold", 1.0), novel_top=fusion.get("novel_top", 0))

    def scores(self, texts: Sequence[str]) -> tuple[list[SparseScores], list[SparseScores], list[dict[str, Hit]]]:
        """Per note: fused ``{code: score}``, new-code suggestions ``{code: cosine}``, each code's (cosine, mention)."""
        hits = retrieve(self.encoder, self.index, [self.extractor.codable(text) for text in texts], k=self.k)
        retrieval = similarities(hits)
        if self.classifier is None:
            return retrieval, [{} for _ in texts], hits
        probs = dense_to_sparse(self.classifier.predict_proba(list(texts)), self.classifier.codes,
                                top=self.classifier_top)
        fused = fuse(probs, retrieval, weight=self.weight, floor=self.floor, novel_weight=self.novel_weight,
                     known=self._known)
        new = novel_suggestions(retrieval, self._known, threshold=self.novel_threshold, top=self.novel_top)
        return fused, new, hits

    def _code(self, code: str, score: float, rank: int, predicted: bool, hit: Hit | None) -> CodeScore:
        evidence = [Evidence(hit[1].start, hit[1].end, hit[1].text, round(hit[0], 4))] if hit else []
        return CodeScore(code=code, description=self._descriptions.get(code), probability=round(float(score), 6),
                         predicted=predicted, rank=rank, evidence=evidence)

    def predict(self, texts: Sequence[str], *, ids: Sequence[str] | None = None, top_k: int = 10,
                progress: Update | None = None) -> list[NotePrediction]:
        """Per note: the codes above the threshold plus the ``top_k`` best-ranked, with matching mentions."""
        check_note_texts(texts, "predict")
        if ids is not None and len(ids) != len(texts):
            raise MedcoderError(f"{len(ids)} ids for {len(texts)} texts")
        results = []
        for start in range(0, len(texts), 64):
            batch = list(texts[start : start + 64])
            fused, new, evidence = self.scores(batch)
            for row, (scores, new_codes, hits) in enumerate(zip(fused, new, evidence, strict=True)):
                ranked = sorted(scores.items(), key=lambda item: -item[1])
                codes = []
                for rank, (code, score) in enumerate(ranked, start=1):
                    if score < self.threshold and rank > top_k:
                        break
                    codes.append(self._code(code, score, rank, score >= self.threshold, hits.get(code)))
                suggested = [self._code(code, cosine, rank, True, hits.get(code))
                             for rank, (code, cosine) in enumerate(new_codes.items(), start=1)]
                note_id = None if ids is None else ids[start + row]
                results.append(NotePrediction(id=note_id, codes=codes,
                                              new_codes=suggested if self.classifier is not None else None))
            if progress is not None:
                progress(min(start + 64, len(texts)), len(texts))
        return results
