"""The METRICS.md figures of sparse per-note scores: systems that can rank any catalog code.

Retrieval, its fusion with a classifier and the reranker score a few codes a note,
``{code: score}``, out of a whole catalog. :func:`evaluate_open_set` lays them out over
the codes some note scored or is coded with (:func:`~medcoder.evaluation.figures.sparse_layout`,
never one column per catalog code) and measures them with the functions a model's dense
scores go through. A code a note did not score ranks below every code it did and is never
predicted; a gold code nobody scored is a miss that adds 0 to AP.

The figures keep the conventions these reports have always had, so that the figures of
saved systems stay the same: see :mod:`medcoder.evaluation.figures` (micro F1 as the
harmonic mean of P and R, P@k ties as listed) and, for the threshold, the ``"cut"`` rule
of :mod:`medcoder.evaluation.thresholds`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.evaluation import metrics as m
from medcoder.evaluation.figures import (
    ScoreLayout,
    average_precision,
    pooled_prf,
    precision_at,
    recall_at,
    sparse_layout,
    unseen_gold,
)
from medcoder.evaluation.thresholds import tune_global_threshold

SparseScores = Sequence[Mapping[str, float]]

_NO_PAIRS_THRESHOLD = 1.0  # the threshold tuned on no scored pair at all


def _layout(
    scores: SparseScores, gold: Sequence[Sequence[str]], extra_codes: Iterable[str] = (), *, listing: bool = False
) -> ScoreLayout:
    if len(scores) != len(gold):
        raise MedcoderError(f"{len(scores)} notes of scores but {len(gold)} gold code lists")
    return sparse_layout(scores, gold, extra_codes, listing=listing)


def _ranking(layout: ScoreLayout, threshold: float | None, k: int) -> dict[str, Any]:
    """``{"notes", "gold_assignments", "map", "recall@k"}`` (+ micro P/R/F1 at ``threshold``) of ``layout``.

    Notes without gold leave MAP and recall@k; with none left both are NaN and no
    micro figure is given.
    """
    n_gold = layout.n_gold()
    keep = n_gold > 0
    result: dict[str, Any] = {"notes": int(keep.sum()), "gold_assignments": int(n_gold.sum())}
    if not keep.any():
        return result | {"map": float("nan"), f"recall@{k}": float("nan")}
    result["map"] = average_precision(layout, keep)
    result[f"recall@{k}"] = recall_at(layout, k, keep)
    if threshold is not None:
        predicted = layout.predicted(threshold)
        tp, n_predicted = int((predicted & layout.gold).sum()), int(predicted.sum())
        precision, recall, f1 = pooled_prf(tp, n_predicted, int(n_gold.sum()))
        result |= {"micro_precision": precision, "micro_recall": recall, "micro_f1": f1}
    return result


def open_set_figures(
    scores: SparseScores, gold: Sequence[Sequence[str]], *, threshold: float | None = None, k: int = 10
) -> dict[str, Any]:
    """MAP and recall@k (and micro P/R/F1 when ``threshold`` is given) of sparse scores against ``gold``.

    Args:
        scores: per note, ``{code: score}``.
        gold: per note, its gold codes (duplicates count once).
        threshold: the decision rule ``score >= threshold``; None: no micro figures.
        k: the recall cut-off.

    Returns:
        ``{"notes", "gold_assignments", "map", "recall@k"[, "micro_precision", "micro_recall", "micro_f1"]}``.
    """
    return _ranking(_layout(scores, gold), threshold, k)


def evaluate_open_set(
    scores: SparseScores,
    gold: Sequence[Sequence[str]],
    seen: Set[str],
    *,
    threshold: float | None = None,
    train_codes: Iterable[str] | None = None,
    k: int = 8,
) -> dict[str, Any]:
    """Figures of sparse scores over all gold codes and over the gold codes not in ``seen`` (unseen in train).

    Args:
        scores: per note, ``{code: score}``.
        gold: per note, its gold codes.
        seen: the codes train notes carry.
        threshold: the dev-tuned decision rule ``score >= threshold``; None: no decision figures.
        train_codes: the label space's train codes. Given (with ``threshold``), "all" also has the
            figures of METRICS.md's label space, train codes ∪ gold codes: macro-F1 over it and
            over its codes with gold (a predicted code outside it is a false positive in the
            micro figures only), P@k over the notes with gold, and its size.
        k: the P@k cut-off.

    Returns:
        ``{"all": {"notes", "gold_assignments", "map", "recall@10"[, "micro_precision", "micro_recall",
        "micro_f1"][, "macro_f1", "macro_f1_with_gold", "p_at_k", "label_space"]}, "unseen": {"notes",
        "gold_assignments", "map", "recall@10"}}``; NaN where a figure is undefined. Unseen: each note's
        seen gold codes leave its ranking and its gold set; notes without an unseen gold code drop out.
    """
    if train_codes is not None and threshold is None:
        raise ValueError("the label-space figures (train_codes) need a threshold")
    space = None if train_codes is None else set(train_codes) | {c for codes in gold for c in codes}
    layout = _layout(scores, gold, space or (), listing=space is not None)
    every = _ranking(layout, threshold, 10)
    unseen = unseen_gold(layout, np.array([c not in seen for c in layout.codes], dtype=bool))
    if space is not None and threshold is not None:
        in_space = np.array([c in space for c in layout.codes], dtype=bool)
        y, predicted = layout.gold[:, in_space], layout.predicted(threshold)[:, in_space]
        every |= {
            "macro_f1": m.macro_prf(y, predicted)[2],
            "macro_f1_with_gold": m.macro_prf(y, predicted, labels_mask=y.any(axis=0))[2],
            f"p_at_{k}": precision_at(layout, k, layout.n_gold() > 0),
            "label_space": len(space),
        }
    return {
        "all": every,
        "unseen": {
            "notes": unseen.n_notes,
            "gold_assignments": unseen.n_gold,
            "map": unseen.map,
            "recall@10": unseen.recall_at_k,
        },
    }


def tune_open_set_threshold(scores: SparseScores, gold: Sequence[Sequence[str]]) -> float:
    """The global threshold maximising dev micro-F1 of sparse scores (candidates: every score).

    The dense search of :func:`~medcoder.evaluation.thresholds.tune_global_threshold` over the
    scored pairs, every gold assignment in the F1 (a gold code no note scored is a miss at any
    threshold), by the ``"cut"`` rule: the best cut-off score itself. 1.0 with no scored pair.
    """
    layout = _layout(scores, gold)
    scored = layout.scored
    assert scored is not None  # a sparse layout knows which cells each note scored
    if not scored.any():
        return _NO_PAIRS_THRESHOLD
    return tune_global_threshold(
        layout.hits()[scored][:, None],
        layout.scores[scored][:, None],
        n_gold=int(layout.n_gold().sum()),
        rule="cut",
    )


def suggestion_figures(suggested: SparseScores, gold: Sequence[Sequence[str]], known: Set[str]) -> dict[str, Any]:
    """Precision / recall / F1 of suggested new codes against the gold codes outside ``known``.

    Returns:
        ``{"precision", "recall", "f1", "suggested_per_note", "gold_new_assignments"}``.
    """
    layout = _layout(suggested, [[c for c in codes if c not in known] for codes in gold])
    assert layout.scored is not None
    n_suggested = int(layout.scored.sum())
    n_gold = int(layout.n_gold().sum())
    precision, recall, f1 = pooled_prf(int(layout.hits().sum()), n_suggested, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "suggested_per_note": n_suggested / max(1, len(gold)),
        "gold_new_assignments": n_gold,
    }
