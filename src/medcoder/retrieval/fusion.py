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
- :class:`ScoreTable` lays sparse per-note scores out as a dense matrix over the
  codes anything scored; :func:`open_set_metrics` computes MAP / micro-F1 /
  recall@k on it, counting gold codes no column holds as misses (they add 0 to AP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.evaluation.metrics import mean_average_precision, rank_order
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


def open_set_report(
    scores: Sequence[Mapping[str, float]],
    gold: Sequence[Sequence[str]],
    seen: Set[str],
    *,
    threshold: float | None = None,
) -> dict[str, Any]:
    """:func:`open_set_metrics` over all gold codes and over the gold codes not in ``seen`` (unseen in train)."""
    unseen_scores, unseen_gold = restrict_to_unseen(scores, gold, seen)
    return {
        "all": open_set_metrics(scores, gold, threshold=threshold),
        "unseen": open_set_metrics(unseen_scores, unseen_gold),
    }


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


class ScoreTable:
    """Sparse note scores as a dense ``[notes, columns]`` matrix; columns: every code any note scored."""

    def __init__(self, scores: Sequence[Mapping[str, float]]) -> None:
        self.codes = sorted({code for row in scores for code in row})
        column = {code: i for i, code in enumerate(self.codes)}
        self.scored = np.zeros((len(scores), len(self.codes)), dtype=bool)
        values = [score for row in scores for score in row.values()]
        # an empty cell sits below any real score (a ranker's raw scores can be any real number)
        floor = min(values) - 1.0 if values else -1.0
        self.matrix = np.full((len(scores), len(self.codes)), floor, dtype=np.float64)
        for i, row in enumerate(scores):
            for code, score in row.items():
                self.matrix[i, column[code]] = score
                self.scored[i, column[code]] = True
        self._column = column

    def gold_matrix(self, gold: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(bool ``[notes, columns]`` of gold codes the columns hold, each note's full gold count)."""
        y = np.zeros(self.matrix.shape, dtype=bool)
        for i, codes in enumerate(gold):
            for code in codes:
                if code in self._column:
                    y[i, self._column[code]] = True
        return y, np.array([len(set(codes)) for codes in gold])


def open_set_metrics(
    scores: Sequence[Mapping[str, float]], gold: Sequence[Sequence[str]], *, threshold: float | None = None, k: int = 10
) -> dict[str, float]:
    """MAP and recall@k (and micro P/R/F1 when ``threshold`` is given) of sparse scores against ``gold``.

    Codes a note did not score rank below every scored one; gold codes nobody
    scored count in each note's gold total, so they add 0 to AP and are misses.
    """
    if len(scores) != len(gold):
        raise MedcoderError(f"{len(scores)} notes of scores but {len(gold)} gold code lists")
    table = ScoreTable(scores)
    y, n_gold = table.gold_matrix(gold)
    keep = n_gold > 0
    result = {"notes": int(keep.sum()), "gold_assignments": int(n_gold.sum())}
    if not keep.any():
        return result | {"map": float("nan"), f"recall@{k}": float("nan")}
    scored = table.scored[keep]
    result["map"] = mean_average_precision(y[keep] & scored, table.matrix[keep], n_gold=n_gold[keep])
    order = rank_order(table.matrix[keep])[:, :k]
    top_hits = np.take_along_axis(y[keep] & scored, order, axis=1).sum()
    result[f"recall@{k}"] = float(top_hits / n_gold[keep].sum())
    if threshold is not None:
        predicted = table.scored & (table.matrix >= threshold)
        precision, recall, f1 = _prf(int((predicted & y).sum()), int(predicted.sum()), int(n_gold.sum()))
        result |= {"micro_precision": precision, "micro_recall": recall, "micro_f1": f1}
    return result


def _prf(tp: int, n_predicted: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall (NaN without gold) and F1 from pooled counts."""
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / n_gold if n_gold else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def restrict_to_unseen(
    scores: Sequence[Mapping[str, float]], gold: Sequence[Sequence[str]], seen: set[str]
) -> tuple[list[SparseScores], list[list[str]]]:
    """Gold codes never seen in train only: a note's seen gold codes leave its ranking and its gold set.

    So an unseen gold code competes only with wrong codes, and notes without an
    unseen gold code drop out of MAP and recall.
    """
    kept_scores, kept_gold = [], []
    for row, codes in zip(scores, gold, strict=True):
        seen_gold = {c for c in codes if c in seen}
        kept_scores.append({c: s for c, s in row.items() if c not in seen_gold})
        kept_gold.append([c for c in dict.fromkeys(codes) if c not in seen])
    return kept_scores, kept_gold


def best_threshold(scores: Sequence[Mapping[str, float]], gold: Sequence[Sequence[str]]) -> float:
    """The global threshold maximising micro-F1 (candidates: every score)."""
    gold_sets = [set(g) for g in gold]
    pairs = sorted(
        ((s, c in g) for row, g in zip(scores, gold_sets, strict=True) for c, s in row.items()), key=lambda p: -p[0]
    )
    total_gold = sum(len(g) for g in gold_sets)
    best, best_f1, tp = 1.0, -1.0, 0
    for rank, (score, is_gold) in enumerate(pairs, start=1):
        tp += is_gold
        f1 = 2 * tp / (rank + total_gold)
        if f1 > best_f1 and (rank == len(pairs) or pairs[rank][0] < score):
            best, best_f1 = score, f1
    return float(best)


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
                        "map": open_set_metrics(fused, gold)["map"],
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
    return FusionParams(best["weight"], best["novel_weight"], best["floor"], best_threshold(fused, gold)), grid


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
    return best_threshold(candidates, wanted)


def suggestion_metrics(
    suggested: Sequence[Mapping[str, float]], gold: Sequence[Sequence[str]], known: Set[str]
) -> dict[str, float]:
    """Precision / recall / F1 of suggested new codes against the gold codes outside ``known``."""
    wanted = [{c for c in codes if c not in known} for codes in gold]
    tp = sum(len(set(row) & want) for row, want in zip(suggested, wanted, strict=True))
    n_suggested = sum(len(row) for row in suggested)
    n_gold = sum(len(want) for want in wanted)
    precision, recall, f1 = _prf(tp, n_suggested, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "suggested_per_note": n_suggested / max(1, len(gold)),
        "gold_new_assignments": n_gold,
    }
