"""Decision thresholds tuned on dev scores, then applied unchanged to test.

The prediction rule everywhere is ``score >= threshold``. Tuning is exact: the
scores are sorted once, every distinct score is tried as a cut-off ("predict
every pair scoring at least this"), and F1 is read off cumulative counts, so
the cost is one sort, O(N log N) for N scored pairs.

The returned threshold is the midpoint between the best cut-off score and the
next lower distinct score, so that test scores falling in the gap between two
dev scores are treated as neither side more than the other. When the best
cut-off is the lowest score (predict everything), that score itself is
returned. Among cut-offs with equal F1 the highest one wins (fewest
predictions), which makes the choice deterministic.

Systems that score sparse per-note codes (retrieval, fusion, the reranker) tune
with the same search but the ``"cut"`` rule (:func:`tune_global_threshold`): the
best cut-off score itself, and with no gold pair the highest score. Their saved
thresholds were tuned so, and the figures written with them depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medcoder.errors import InputError

Strategy = Literal["global", "per_label"]
Rule = Literal["midpoint", "cut"]


def _best_cutoffs(
    y_true: np.ndarray, scores: np.ndarray, *, n_pos: np.ndarray | None = None, rule: Rule = "midpoint"
) -> tuple[np.ndarray, np.ndarray]:
    """Best F1 threshold of each column.

    Args:
        y_true: bool ``[n_rows, n_cols]``.
        scores: float ``[n_rows, n_cols]``, finite, ``n_rows >= 1``.
        n_pos: int ``[n_cols]``, each column's gold count when some of its gold
            has no row (a miss at every cut-off); default: the gold rows.
        rule: ``"midpoint"`` (the module docstring) or ``"cut"``: the cut-off score itself.

    Returns:
        ``(thresholds, best_f1)``, each float ``[n_cols]``. A column with no
        positive row gets F1 0 and, by the midpoint rule, the threshold just
        above its maximum (predict nothing); by the cut rule, its maximum.
    """
    n_rows = scores.shape[0]
    # Unstable sort is enough: within a run of equal scores only the run's
    # last row is a cut-off, and its cumulative TP does not depend on the order.
    order = np.argsort(-scores, axis=0)
    s = np.take_along_axis(scores, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y_true, order, axis=0), axis=0)
    n_pos = tp[-1] if n_pos is None else np.asarray(n_pos)
    n_pred = np.arange(1, n_rows + 1)[:, None]
    # Only the last row of a run of equal scores is a cut-off the rule
    # "score >= t" can realise; the others would split a tie.
    is_cut = np.ones_like(s, dtype=bool)
    is_cut[:-1] = s[:-1] != s[1:]
    f1 = 2.0 * tp / (n_pred + n_pos)
    f1 = np.where(is_cut, f1, -1.0)
    best = np.argmax(f1, axis=0)  # first maximum = highest cut-off among ties
    cols = np.arange(scores.shape[1])
    best_f1 = f1[best, cols]
    at = s[best, cols]
    if rule == "cut":
        return at, best_f1
    below = s[np.minimum(best + 1, n_rows - 1), cols]
    mid = at / 2 + below / 2  # halves first: no overflow near the float maximum
    # Adjacent floats can round the midpoint down onto ``below``, which would
    # then be predicted too; fall back to the cut-off score itself.
    thresholds = np.where((best < n_rows - 1) & (mid > below) & (mid <= at), mid, at)
    no_pos = n_pos == 0
    thresholds = np.where(no_pos, np.nextafter(s[0], np.inf), thresholds)
    best_f1 = np.where(no_pos, 0.0, best_f1)
    return thresholds, best_f1


def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool, copy=False)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true and scores must both be [n_docs, n_labels], got {y.shape} and {s.shape}")
    if s.shape[0] == 0:
        raise ValueError("cannot tune thresholds on zero documents")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return y, s


def tune_global_threshold(
    y_true: np.ndarray, scores: np.ndarray, *, n_gold: int | None = None, rule: Rule = "midpoint"
) -> float:
    """One threshold for all labels maximising micro-F1 on dev.

    Args:
        y_true: bool ``[n_docs, n_labels]`` dev gold.
        scores: float ``[n_docs, n_labels]`` dev scores.
        n_gold: all dev gold assignments, when some have no cell (codes a system did
            not score: misses at every threshold); default ``y_true.sum()``.
        rule: ``"midpoint"`` or ``"cut"`` (see the module docstring).

    Returns:
        The threshold. With no positive pair at all, the smallest float above the
        maximum score (midpoint rule) or the maximum score (cut rule).
    """
    y, s = _check_inputs(y_true, scores)
    if n_gold is not None and n_gold < np.count_nonzero(y):
        raise ValueError(f"n_gold ({n_gold}) is smaller than the gold pairs in y_true ({np.count_nonzero(y)})")
    n_pos = None if n_gold is None else np.array([n_gold])
    # Micro-F1 pools all pairs, so it is the F1 of one flattened column.
    thresholds, _ = _best_cutoffs(y.reshape(-1, 1), s.reshape(-1, 1), n_pos=n_pos, rule=rule)
    return float(thresholds[0])


def tune_per_label_thresholds(y_true: np.ndarray, scores: np.ndarray, *, fallback: float) -> np.ndarray:
    """One threshold per label maximising that label's dev F1.

    Args:
        y_true: bool ``[n_docs, n_labels]`` dev gold.
        scores: float ``[n_docs, n_labels]`` dev scores.
        fallback: threshold for labels with no positive dev document (usually
            the global threshold): their dev F1 cannot be improved, and
            "predict nothing" would silence them on test for good.

    Returns:
        float ``[n_labels]``.
    """
    y, s = _check_inputs(y_true, scores)
    thresholds, _ = _best_cutoffs(y, s)
    return np.where(y.any(axis=0), thresholds, float(fallback))


def apply_thresholds(scores: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """Predictions ``scores >= thresholds``.

    Args:
        scores: float ``[n_docs, n_labels]``.
        thresholds: a scalar, or float ``[n_labels]`` (one per column).

    Returns:
        bool ``[n_docs, n_labels]``.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [n_docs, n_labels], got shape {s.shape}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != s.shape[1]):
        raise ValueError(f"thresholds must be a scalar or have shape ({s.shape[1]},), got shape {t.shape}")
    return s >= t


@dataclass(frozen=True)
class Thresholds:
    """Tuned thresholds as stored in a bundle's ``thresholds.json``.

    ``global_`` is always set (it is the fallback of the per-label strategy);
    ``per_label`` holds one value per model label when ``strategy`` is
    ``"per_label"`` and is ``None`` otherwise.
    """

    strategy: Strategy
    global_: float
    per_label: list[float] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ("global", "per_label"):
            raise InputError(f"expected 'global' or 'per_label', got {self.strategy!r}", field="strategy")
        if (self.strategy == "per_label") != (self.per_label is not None):
            raise InputError(
                "per_label values are required by, and only allowed with, strategy 'per_label'",
                field="per_label",
            )

    def values(self) -> float | np.ndarray:
        """The scalar threshold, or float ``[n_labels]`` for the per-label strategy."""
        if self.per_label is None:
            return self.global_
        return np.asarray(self.per_label, dtype=np.float64)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """bool ``[n_docs, n_labels]`` predictions for float ``[n_docs, n_labels]`` scores."""
        return apply_thresholds(scores, self.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"strategy", "global", "per_label"}``."""
        return {
            "strategy": self.strategy,
            "global": float(self.global_),
            "per_label": None if self.per_label is None else [float(v) for v in self.per_label],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors."""
        expected = {"strategy", "global", "per_label"}
        unknown = set(data) - expected
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)}; expected {sorted(expected)}")
        for key in ("strategy", "global"):
            if key not in data:
                raise InputError("missing key", field=key)
        per_label = data.get("per_label")
        try:
            global_ = float(data["global"])
            values = None if per_label is None else [float(v) for v in per_label]
        except (TypeError, ValueError) as exc:
            raise InputError(f"expected numbers: {exc}") from None
        return cls(strategy=data["strategy"], global_=global_, per_label=values)

    @classmethod
    def tune(cls, y_true: np.ndarray, scores: np.ndarray, strategy: Strategy) -> Thresholds:
        """Tune on dev gold bool ``[n_docs, n_labels]`` and scores float ``[n_docs, n_labels]``."""
        if strategy not in ("global", "per_label"):
            raise ValueError(f"strategy must be 'global' or 'per_label', got {strategy!r}")
        global_ = tune_global_threshold(y_true, scores)
        if strategy == "global":
            return cls("global", global_)
        per_label = tune_per_label_thresholds(y_true, scores, fallback=global_)
        return cls("per_label", global_, [float(v) for v in per_label])
