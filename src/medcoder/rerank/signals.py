"""Retrieval evidence per (note, code), with the mentions behind it.

Every mention of a note, codable or not, asks the catalog index for its top-k
codes. Per code the note then has: the best and the mean cosine of the codable
mentions that retrieved it, how many did, how many excluded mentions (negated,
hypothetical, family history) retrieved it, and the best codable mention itself
(the evidence shown to a coder). A code that only excluded mentions retrieved
is evidence *against* coding it, not a candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medcoder.progress import Update
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.index import CodeIndex, unit_rows
from medcoder.retrieval.mentions import Mention, MentionExtractor

_BATCH = 32  # notes encoded at once


@dataclass(frozen=True)
class CodeEvidence:
    """What retrieval found for one code in one note."""

    best: float  # best cosine of a codable mention (nan: none retrieved it)
    mean: float  # mean cosine of the codable mentions that retrieved it
    n_codable: int
    n_excluded: int  # negated / hypothetical / family-history mentions that retrieved it
    best_excluded: float  # their best cosine (nan: none)
    start: int = -1  # the best codable mention's span (-1: none)
    end: int = -1

    def to_list(self) -> list[float]:
        return [self.best, self.mean, self.n_codable, self.n_excluded, self.best_excluded, self.start, self.end]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> CodeEvidence:
        best, mean, n_codable, n_excluded, best_excluded, start, end = values
        return cls(
            float(best), float(mean), int(n_codable), int(n_excluded), float(best_excluded), int(start), int(end)
        )


NoteEvidence = dict[str, CodeEvidence]


def note_evidence(
    encoder: BiEncoder,
    index: CodeIndex,
    extractor: MentionExtractor,
    texts: Sequence[str],
    *,
    k: int,
    progress: Update | None = None,
    extracted: Sequence[list[Mention]] | None = None,
    keep_vectors: list[np.ndarray] | None = None,
) -> list[NoteEvidence]:
    """:class:`CodeEvidence` per retrieved code, for each text (``extracted``: its mentions, when already known).

    ``keep_vectors``: a list that receives, per text, the unit vectors of its codable mentions
    (float32 ``[mentions, dim]``), for scoring codes retrieval did not list (the catalog's children).
    """
    out: list[NoteEvidence] = []
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        if extracted is not None:
            mentions = list(extracted[start : start + _BATCH])
        else:
            mentions = [extractor.extract(text) for text in batch]
        flat = [m for note in mentions for m in note]
        vectors = encoder.encode([m.text for m in flat]) if flat else np.zeros((0, 1), dtype=np.float32)
        offset = 0
        for note in mentions:
            if keep_vectors is not None:
                codable = [offset + m for m, mention in enumerate(note) if mention.excluded is None]
                keep_vectors.append(unit_rows(vectors[codable]) if flat else np.zeros((0, index.dim), np.float32))
            hits: dict[str, tuple[list[float], list[float], tuple[float, int, int]]] = {}
            if note:
                top, sims = index.search(vectors[offset : offset + len(note)], k)
                for mention, row, row_sims in zip(note, top.tolist(), sims.tolist(), strict=True):
                    for i, sim in zip(row, row_sims, strict=True):
                        codable, excluded, best = hits.setdefault(index.codes[i], ([], [], (-2.0, -1, -1)))
                        if mention.excluded is None:
                            codable.append(sim)
                            if sim > best[0]:
                                hits[index.codes[i]] = (codable, excluded, (sim, mention.start, mention.end))
                        else:
                            excluded.append(sim)
            offset += len(note)
            out.append(
                {
                    code: CodeEvidence(
                        best=max(codable) if codable else float("nan"),
                        mean=float(np.mean(codable)) if codable else float("nan"),
                        n_codable=len(codable),
                        n_excluded=len(excluded),
                        best_excluded=max(excluded) if excluded else float("nan"),
                        start=best[1],
                        end=best[2],
                    )
                    for code, (codable, excluded, best) in hits.items()
                }
            )
        if progress is not None:
            progress(min(start + _BATCH, len(texts)), len(texts))
    return out


def evidence_to_json(notes: Sequence[NoteEvidence]) -> list[dict[str, list[float]]]:
    """JSON-ready (NaN written as None)."""
    return [
        {code: [None if v != v else v for v in ev.to_list()] for code, ev in note.items()}  # type: ignore[misc]
        for note in notes
    ]


def evidence_from_json(data: Sequence[dict[str, list[float | None]]]) -> list[NoteEvidence]:
    return [
        {
            code: CodeEvidence.from_list([float("nan") if v is None else v for v in values])
            for code, values in note.items()
        }
        for note in data
    ]


NoteMentions = tuple[list[frozenset[str]], list[frozenset[str]]]  # stems of (codable, excluded) mentions


def note_mentions(
    extractor: MentionExtractor,
    texts: Sequence[str],
    *,
    progress: Update | None = None,
    extracted: Sequence[list[Mention]] | None = None,
) -> list[NoteMentions]:
    """Per note, the content-word stems of each codable mention and of each negated / hypothetical / family one."""
    from medcoder.rerank.lexical import stems

    out: list[NoteMentions] = []
    for i, text in enumerate(texts):
        codable, excluded = [], []
        for mention in extracted[i] if extracted is not None else extractor.extract(text):
            found = stems(mention.text)
            if found:
                (codable if mention.excluded is None else excluded).append(found)
        out.append((codable, excluded))
        if progress is not None and (i + 1) % 50 == 0:
            progress(i + 1, len(texts))
    return out


def mentions_to_json(notes: Sequence[NoteMentions]) -> list[list[list[list[str]]]]:
    return [[[sorted(m) for m in part] for part in note] for note in notes]


def mentions_from_json(data: Sequence[Sequence[Sequence[Sequence[str]]]]) -> list[NoteMentions]:
    return [([frozenset(m) for m in note[0]], [frozenset(m) for m in note[1]]) for note in data]
