"""From mention hits to note scores, fusion with a classifier, and metrics over an open code set.

- A note's retrieval scores (:func:`retrieve`): each codable
  mention asks the index for its top-k codes; a code's score is its best cosine.
- :func:`fuse`: ``classifier probability + weight * max(0, retrieval - floor)``. A
  code the classifier knows keeps its probability and gains when a mention matches
  its description well; a code it never saw can only score through retrieval (with
  its own ``novel_weight``), so it enters the ranking when a mention matches it
  better than ``floor``.
- :func:`tune_fusion` picks the two weights and ``floor`` by dev MAP, then one global
  decision threshold by dev micro-F1 (METRICS.md: never on test).
- :func:`novel_suggestions`: besides the fused ranking, up to a few codes the
  classifier never saw, whose cosine reaches a threshold tuned on dev
  (:func:`tune_novel_threshold`): the ranking stays as precise as dev MAP wants,
  and new codes are still shown, apart.

The figures of all these scores (MAP, micro-F1, recall@10, over all gold codes and the
unseen ones) and the decision threshold come from :mod:`medcoder.evaluation.open_set`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.evaluation.open_set import open_set_figures, tune_open_set_threshold
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.index import CodeIndex
from medcoder.retrieval.mentions import Mention

SparseScores = dict[str, float]
Hit = tuple[float, Mention]  # (cosine, the mention) behind a retrieved code


def retrieve(
    encoder: BiEncoder, index: CodeIndex, mentions: Sequence[Sequence[Mention]], *, k: int
) -> list[dict[str, Hit]]:
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


@dataclass(frozen=True)
class FusionParams:
    weight: float  # retrieval weight for codes the classifier knows
    novel_weight: float  # retrieval weight for codes it never saw (their only evidence)
    floor: float
    threshold: float


def fuse(
    classifier: Sequence[Mapping[str, float]],
    retrieval: Sequence[Mapping[str, float]],
    *,
    weight: float,
    floor: float,
    novel_weight: float | None = None,
    known: Set[str] | None = None,
) -> list[SparseScores]:
    """``p(c) + w * max(0, r(c) - floor)`` per note; ``w`` is ``novel_weight`` for codes outside ``known``.

    ``known``: the classifier's codes (default: the codes it scored for the note);
    ``novel_weight`` defaults to ``weight``.
    """
    if len(classifier) != len(retrieval):
        raise MedcoderError(f"{len(classifier)} notes of classifier scores but {len(retrieval)} of retrieval scores")
    novel_weight = weight if novel_weight is None else novel_weight
    fused = []
    for probs, sims in zip(classifier, retrieval, strict=True):
        scores = dict(probs)
        for code, similarity in sims.items():
            is_known = code in probs if known is None else code in known
            bonus = (weight if is_known else novel_weight) * max(0.0, similarity - floor)
            if bonus > 0:  # a code only retrieval found stays unscored (ranked last) without a bonus
                scores[code] = scores.get(code, 0.0) + bonus
        fused.append(scores)
    return fused


def dense_to_sparse(scores: np.ndarray, codes: Sequence[str], *, top: int | None = None) -> list[SparseScores]:
    """Rows of a ``[notes, codes]`` matrix as ``{code: score}`` (only the ``top`` best per row when given)."""
    rows = []
    for row in np.asarray(scores):
        keep = np.argsort(-row, kind="stable")[:top] if top else range(len(row))
        rows.append({codes[i]: float(row[i]) for i in keep})
    return rows


def tune_fusion(
    classifier: Sequence[Mapping[str, float]],
    retrieval: Sequence[Mapping[str, float]],
    gold: Sequence[Sequence[str]],
    *,
    known: Set[str] | None = None,
    weights: Sequence[float] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    novel_weights: Sequence[float] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    floors: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6),
) -> tuple[FusionParams, list[dict[str, float]]]:
    """Grid over (weight, novel_weight, floor) by dev MAP, then the micro-F1 threshold; returns params and grid."""
    grid = []
    for weight in weights:
        for novel_weight in novel_weights:
            for floor in floors if weight > 0 or novel_weight > 0 else floors[:1]:
                fused = fuse(classifier, retrieval, weight=weight, floor=floor, novel_weight=novel_weight, known=known)
                grid.append(
                    {
                        "weight": weight,
                        "novel_weight": novel_weight,
                        "floor": floor,
                        "map": open_set_figures(fused, gold)["map"],
                    }
                )
    best = max(grid, key=lambda row: row["map"])
    fused = fuse(
        classifier,
        retrieval,
        weight=best["weight"],
        floor=best["floor"],
        novel_weight=best["novel_weight"],
        known=known,
    )
    threshold = tune_open_set_threshold(fused, gold)
    return FusionParams(best["weight"], best["novel_weight"], best["floor"], threshold), grid


def novel_suggestions(
    retrieval: Sequence[Mapping[str, float]], known: Set[str], *, threshold: float, top: int
) -> list[SparseScores]:
    """Per note, up to ``top`` codes outside ``known`` whose retrieval cosine reaches ``threshold``, best first."""
    out = []
    for sims in retrieval:
        novel = sorted(((c, s) for c, s in sims.items() if c not in known and s >= threshold), key=lambda cs: -cs[1])
        out.append(dict(novel[:top]))
    return out


NO_SUGGESTIONS = 2.0  # a cosine threshold above any cosine: no new-code suggestions


def tune_novel_threshold(
    retrieval: Sequence[Mapping[str, float]], gold: Sequence[Sequence[str]], known: Set[str], *, top: int
) -> float:
    """The cosine threshold for :func:`novel_suggestions` with the best micro-F1 against gold codes outside ``known``.

    When no candidate is a gold code (dev has no gold code outside ``known``, or
    retrieval finds none of them) nothing shows that a suggestion can be right:
    the threshold is :data:`NO_SUGGESTIONS`, above every cosine, and none is made.
    (Tuned on such a dev set the best threshold used to be the highest cosine,
    so an exact match of a catalog description was always suggested, and wrong.)
    """
    candidates = novel_suggestions(retrieval, known, threshold=-1.0, top=top)
    wanted = [[c for c in codes if c not in known] for codes in gold]
    if not any(c in row for row, codes in zip(candidates, wanted, strict=True) for c in codes):
        return NO_SUGGESTIONS
    return tune_open_set_threshold(candidates, wanted)


# the name medcoder.inference.retrieval imports; the figures live in medcoder.evaluation.open_set
