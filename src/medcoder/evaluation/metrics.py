"""Evaluation metrics as pure, vectorised functions on numpy arrays.

Shapes: ``y_true`` and ``y_pred`` are boolean ``[n_docs, n_labels]`` (0/1 ints
are accepted), ``scores`` is float ``[n_docs, n_labels]``. Definitions follow
METRICS.md exactly; where a ratio has a zero denominator it is 0 (a label with
no gold and no prediction has F1 0), and where a mean is over an empty set the
result is NaN, so the caller can tell "undefined" from "zero".

Ranking (P@k, MAP) sorts each document's codes by descending score and breaks
ties by ascending column index (a stable sort of the negated scores), so every
ranking figure is deterministic and independent of numpy's sort algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_FREQUENCY_BINS: tuple[tuple[int, int | None], ...] = (
    (1, 1),
    (2, 5),
    (6, 10),
    (11, 50),
    (51, None),
)


def _as_bool_matrix(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_docs, n_labels], got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _as_score_matrix(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_docs, n_labels], got shape {arr.shape}")
    # NaN would sort unpredictably and poison every mean; refuse it up front.
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def _gold_and_scores(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as bool and ``scores`` as finite float64, both ``[n_docs, n_labels]``."""
    y = _as_bool_matrix(y_true, "y_true")
    s = _as_score_matrix(scores, "scores")
    _check_same_shape(y, s, "y_true and scores")
    return y, s


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with 0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _per_label_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per label, each int ``[n_labels]``."""
    y_true = _as_bool_matrix(y_true, "y_true")
    y_pred = _as_bool_matrix(y_pred, "y_pred")
    _check_same_shape(y_true, y_pred, "y_true and y_pred")
    tp = np.count_nonzero(y_true & y_pred, axis=0)
    fp = np.count_nonzero(~y_true & y_pred, axis=0)
    fn = np.count_nonzero(y_true & ~y_pred, axis=0)
    return tp, fp, fn


def micro_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Micro precision, recall and F1 from TP/FP/FN pooled over all (doc, label) pairs.

    Args:
        y_true: bool ``[n_docs, n_labels]`` gold.
        y_pred: bool ``[n_docs, n_labels]`` predictions.
    """
    tp, fp, fn = (int(c.sum()) for c in _per_label_counts(y_true, y_pred))
    p = float(_safe_div(tp, tp + fp))
    r = float(_safe_div(tp, tp + fn))
    f1 = float(_safe_div(2 * tp, 2 * tp + fp + fn))
    return p, r, f1


def per_label_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label precision, recall and F1, each float ``[n_labels]`` (0 where undefined)."""
    tp, fp, fn = _per_label_counts(y_true, y_pred)
    # F1 = 2TP / (2TP + FP + FN) equals the harmonic mean of P and R, and is 0
    # (not NaN) for a label with no gold and no prediction, as METRICS.md asks.
    return _safe_div(tp, tp + fp), _safe_div(tp, tp + fn), _safe_div(2 * tp, 2 * tp + fp + fn)


def per_label_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-label F1, float ``[n_labels]``; 0 for a label with no gold and no prediction."""
    return per_label_prf(y_true, y_pred)[2]


def macro_prf(
    y_true: np.ndarray, y_pred: np.ndarray, *, labels_mask: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Means of per-label precision, recall and F1 (macro F1 is *not* the F1 of macro P/R).

    Args:
        y_true: bool ``[n_docs, n_labels]``.
        y_pred: bool ``[n_docs, n_labels]``.
        labels_mask: bool ``[n_labels]``; average only over these labels (e.g.
            ``y_true.any(axis=0)`` for "labels with >= 1 test gold document").

    Returns:
        ``(p, r, f1)``; NaN for each when the mask selects no label.
    """
    p, r, f1 = per_label_prf(y_true, y_pred)
    if labels_mask is not None:
        mask = np.asarray(labels_mask, dtype=bool)
        if mask.shape != f1.shape:
            raise ValueError(f"labels_mask must have shape {f1.shape}, got {mask.shape}")
        p, r, f1 = p[mask], r[mask], f1[mask]
    if f1.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(p.mean()), float(r.mean()), float(f1.mean())


def _rank_auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column via the Mann-Whitney U statistic, float ``[n_cols]``.

    Tied scores get the average of their ranks, i.e. half credit per tied
    (positive, negative) pair: exactly the area under the trapezoidal ROC curve
    that sklearn computes. NaN for a column lacking one of the two classes.
    """
    n_rows = s.shape[0]
    n_pos = np.count_nonzero(y, axis=0).astype(np.float64)
    n_neg = n_rows - n_pos
    if n_rows == 0:
        return np.full(s.shape[1], np.nan)
    # The order inside a run of equal scores does not matter (the run shares
    # one average rank), so the fast unstable sort is enough.
    order = np.argsort(s, axis=0)
    s_sorted = np.take_along_axis(s, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    starts = np.empty(s.shape, dtype=bool)
    starts[0] = True
    starts[1:] = s_sorted[1:] != s_sorted[:-1]
    ends = np.empty_like(starts)
    ends[-1] = True
    ends[:-1] = starts[1:]
    pos = np.arange(n_rows)[:, None]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, pos, n_rows - 1)[::-1], axis=0)[::-1]
    avg_rank = (first + last) / 2.0 + 1.0
    rank_sum = np.where(y_sorted, avg_rank, 0.0).sum(axis=0)
    u = rank_sum - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = u / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def micro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC over all flattened (doc, label) pairs; NaN if only one class occurs.

    Args:
        y_true: bool ``[n_docs, n_labels]``.
        scores: float ``[n_docs, n_labels]``.
    """
    y, s = _gold_and_scores(y_true, scores)
    return float(_rank_auc(y.reshape(-1, 1), s.reshape(-1, 1))[0])


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-label ROC-AUC over labels with both classes; NaN if no label has both.

    Args:
        y_true: bool ``[n_docs, n_labels]``.
        scores: float ``[n_docs, n_labels]``.
    """
    y, s = _gold_and_scores(y_true, scores)
    auc = _rank_auc(y, s)
    defined = ~np.isnan(auc)
    return float(auc[defined].mean()) if defined.any() else float("nan")


def rank_order(scores: np.ndarray, *, tie_order: np.ndarray | None = None) -> np.ndarray:
    """Column indices of each row by descending score, ties by ascending column (or ``tie_order``).

    Args:
        scores: float ``[n_docs, n_labels]``.
        tie_order: int ``[n_docs, n_labels]``; among equal scores the lower value ranks first.
            Sparse per-note scores pass each code's place in its note's listing, so ties
            rank as the system listed them.

    Returns:
        int ``[n_docs, n_labels]``; row ``i`` lists doc ``i``'s codes best first.
    """
    s = _as_score_matrix(scores, "scores")
    if tie_order is not None:
        tie = np.asarray(tie_order)
        _check_same_shape(s, tie, "scores and tie_order")
        return np.lexsort((tie, -s), axis=1)
    # A stable sort of -s keeps equal scores in column order: deterministic ties.
    return np.argsort(-s, axis=1, kind="stable")


def precision_at_k(
    y_true: np.ndarray,
    scores: np.ndarray,
    k: int,
    *,
    skip_empty: bool = False,
    tie_order: np.ndarray | None = None,
) -> float:
    """Mean over documents of ``|gold ∩ top-k| / k``.

    Ties are broken by column index, or by ``tie_order`` (see :func:`rank_order`).
    The divisor is always ``k``, even when a document has fewer than ``k`` codes
    or gold codes.

    Args:
        y_true: bool ``[n_docs, n_labels]``.
        scores: float ``[n_docs, n_labels]``.
        k: cut-off, >= 1.
        skip_empty: leave out documents with no gold code (the train-seen
            convention); otherwise they count with precision 0.
        tie_order: int ``[n_docs, n_labels]``, the order among equal scores.

    Returns:
        The mean; NaN when no document is left.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    y, s = _gold_and_scores(y_true, scores)
    n_labels = s.shape[1]
    if k >= n_labels:
        top = np.ones(s.shape, dtype=bool)
    elif tie_order is not None:
        top = np.zeros(s.shape, dtype=bool)
        np.put_along_axis(top, rank_order(s, tie_order=tie_order)[:, :k], True, axis=1)
    else:
        # Same top-k as rank_order()[:, :k] without a full sort: everything
        # above the k-th largest score, then the lowest-index columns among
        # those equal to it until k are taken.
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
        above = s > kth
        at_kth = s == kth
        room = k - np.count_nonzero(above, axis=1, keepdims=True)
        top = above | (at_kth & (np.cumsum(at_kth, axis=1) <= room))
    hits = np.count_nonzero(y & top, axis=1) / k
    if skip_empty:
        hits = hits[y.any(axis=1)]
    return float(hits.mean()) if hits.size else float("nan")


def recall_at_k(y_true: np.ndarray, scores: np.ndarray, k: int, *, n_gold: np.ndarray | None = None) -> float:
    """Gold codes among each document's ``k`` top-ranked columns over all gold codes, pooled over documents.

    Ties are broken by column index (see :func:`rank_order`).

    Args:
        y_true: bool ``[n_docs, n_labels]`` gold among the ranked columns.
        scores: float ``[n_docs, n_labels]``.
        k: cut-off, >= 1.
        n_gold: int ``[n_docs]``, each doc's true number of gold codes, including
            ones outside the columns (they are misses); defaults to ``y_true.sum(axis=1)``.

    Returns:
        The pooled recall; NaN when there is no gold code.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    y, s = _gold_and_scores(y_true, scores)
    top = rank_order(s)[:, :k]
    total = np.count_nonzero(y, axis=1) if n_gold is None else np.asarray(n_gold)
    if total.sum() == 0:
        return float("nan")
    return float(np.take_along_axis(y, top, axis=1).sum() / total.sum())


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray, *, n_gold: np.ndarray | None = None) -> float:
    """MAP as CodiEsp defines it.

    For each document all columns are ranked by score (ties by column index);
    ``AP = (1 / |gold|) * sum of precision@r over the ranks r holding a gold code``.
    Every column ranks, including columns whose score is exactly 0 (codes never
    seen in train): they sit wherever 0 falls, at the bottom for probabilities.
    To make gold codes the model cannot rank "add 0", leave their columns out
    and pass the full count in ``n_gold`` instead.

    Args:
        y_true: bool ``[n_docs, n_labels]`` gold among the ranked columns.
        scores: float ``[n_docs, n_labels]``.
        n_gold: int ``[n_docs]``, each doc's true number of gold codes, including
            ones outside the columns; defaults to ``y_true.sum(axis=1)``.

    Returns:
        Mean AP over documents with ``|gold| > 0``; NaN if there are none.
    """
    y = _as_bool_matrix(y_true, "y_true")
    order = rank_order(scores)
    _check_same_shape(y, order, "y_true and scores")
    visible = np.count_nonzero(y, axis=1)
    if n_gold is None:
        denom = visible
    else:
        denom = np.asarray(n_gold)
        if denom.shape != visible.shape:
            raise ValueError(f"n_gold must have shape {visible.shape}, got {denom.shape}")
        if np.any(denom < visible):
            raise ValueError("n_gold is smaller than the number of gold codes in y_true")
    keep = denom > 0
    if not keep.any():
        return float("nan")
    hit = np.take_along_axis(y[keep], order[keep], axis=1)
    ranks = np.arange(1, y.shape[1] + 1, dtype=np.float64)
    prec_at_hits = np.where(hit, np.cumsum(hit, axis=1) / ranks, 0.0)
    return float((prec_at_hits.sum(axis=1) / denom[keep]).mean())


def precision_recall_curve(
    scores: np.ndarray, y_true: np.ndarray, n_gold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro precision-recall curve over every scored (document, label) pair.

    Args:
        scores: float ``[n_docs, n_labels]``.
        y_true: bool, same shape: gold among those columns.
        n_gold: all gold assignments (gold codes outside the columns included: misses).

    Returns:
        ``(precision, recall, threshold)``, one point per distinct score, highest first; a point
        predicts every pair scored at or above its threshold. Pairs scored exactly 0 are left out
        (a rule that predicts every code is no operating point).
    """
    s, g = np.asarray(scores).ravel(), _as_bool_matrix(y_true, "y_true").ravel()
    keep = s > 0
    s, g = s[keep], g[keep]
    order = np.argsort(-s, kind="stable")
    s, g = s[order], g[order]
    if not s.size:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # the last pair of each tie group
    tp = np.cumsum(g)[last]
    return tp / (last + 1), tp / max(n_gold, 1), s[last]


def exact_match(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of documents whose predicted code set equals the gold set exactly."""
    y = _as_bool_matrix(y_true, "y_true")
    p = _as_bool_matrix(y_pred, "y_pred")
    _check_same_shape(y, p, "y_true and y_pred")
    if y.shape[0] == 0:
        return float("nan")
    return float(np.all(y == p, axis=1).mean())


def frequency_bin_name(lo: int, hi: int | None) -> str:
    """How a train-frequency bin ``(lo, hi)`` is named in reports: ``"1"``, ``"2-5"``, ``"51+"``."""
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def f1_by_frequency_bins(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    train_freq: np.ndarray,
    bins: Sequence[tuple[int, int | None]] = DEFAULT_FREQUENCY_BINS,
) -> list[dict[str, Any]]:
    """Macro F1 of the labels in each train-frequency bin.

    Args:
        y_true: bool ``[n_docs, n_labels]``.
        y_pred: bool ``[n_docs, n_labels]``.
        train_freq: int ``[n_labels]``, number of train documents per label.
        bins: inclusive ``(lo, hi)`` ranges; ``hi=None`` is open-ended.

    Returns:
        One dict per bin, ``{"bin": "2-5", "n_labels": int, "macro_f1": float}``,
        starting with ``"0 (unseen)"`` for labels never seen in train; macro_f1
        is NaN for an empty bin. Labels outside every bin are not reported.
    """
    f1 = per_label_f1(y_true, y_pred)
    freq = np.asarray(train_freq)
    if freq.shape != f1.shape:
        raise ValueError(f"train_freq must have shape {f1.shape}, got {freq.shape}")
    ranges: list[tuple[str, np.ndarray]] = [("0 (unseen)", freq <= 0)]
    for lo, hi in bins:
        upper = np.inf if hi is None else hi
        ranges.append((frequency_bin_name(lo, hi), (freq >= lo) & (freq <= upper)))
    out: list[dict[str, Any]] = []
    for name, mask in ranges:
        n = int(mask.sum())
        out.append({"bin": name, "n_labels": n, "macro_f1": float(f1[mask].mean()) if n else float("nan")})
    return out


def _as_index_vector(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array [n_docs], got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def accuracy(y_true_idx: np.ndarray, y_pred_idx: np.ndarray) -> float:
    """Fraction of documents whose predicted class index equals the gold one.

    Args:
        y_true_idx: int ``[n_docs]``.
        y_pred_idx: int ``[n_docs]``.
    """
    t = _as_index_vector(y_true_idx, "y_true_idx")
    p = _as_index_vector(y_pred_idx, "y_pred_idx")
    _check_same_shape(t, p, "y_true_idx and y_pred_idx")
    return float((t == p).mean()) if t.size else float("nan")


def macro_f1_multiclass(y_true_idx: np.ndarray, y_pred_idx: np.ndarray, n_classes: int) -> float:
    """Mean per-class F1 over all ``n_classes`` classes, single-label task.

    A class with no gold and no prediction scores 0, the same "all labels" rule
    as the multi-label macro F1.

    Args:
        y_true_idx: int ``[n_docs]`` in ``[0, n_classes)``.
        y_pred_idx: int ``[n_docs]`` in ``[0, n_classes)``.
        n_classes: size of the class space.
    """
    t = _as_index_vector(y_true_idx, "y_true_idx")
    p = _as_index_vector(y_pred_idx, "y_pred_idx")
    _check_same_shape(t, p, "y_true_idx and y_pred_idx")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes})")
    tp = np.bincount(t[t == p], minlength=n_classes)
    n_true = np.bincount(t, minlength=n_classes)
    n_pred = np.bincount(p, minlength=n_classes)
    return float(_safe_div(2 * tp, n_true + n_pred).mean())
