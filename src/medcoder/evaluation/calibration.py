"""Calibrated probabilities and how calibrated they are: ECE@k with its reliability table (METRICS.md).

A coder reads a code's probability as confidence, so the probabilities a model
shows should mean what they say: of the codes shown at 0.3, about 30% should be
right. :class:`Calibrator` is a strictly increasing map from a real-valued score
(a logit, or any learning-to-rank score) to a probability, fitted on dev:

- ``none``: ``sigmoid(x)``;
- ``temperature``: ``sigmoid(x / T)``, T > 0 minimising the log loss;
- ``platt``: ``sigmoid(a * x + b)``, a > 0 and b minimising the log loss;
- ``isotonic``: scikit-learn's isotonic regression (its step points are what is
  stored), applied so that it stays strictly increasing (see :class:`Calibrator`).

Being strictly increasing, a calibrator never changes how a note's codes rank,
so MAP and P@k are unchanged; the decision thresholds are tuned on the
calibrated dev scores. :func:`choose_calibrator` picks the method by measurement:
cross-validated ECE over groups of pairs (notes), the simplest method winning a tie.

**ECE@k** (METRICS.md): over each note's k top-ranked codes, ``bins`` equal-width
probability bins; ECE = Σ_bins (n_bin / n) · |share of gold codes in the bin −
mean probability in the bin|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError

CALIBRATION_METHODS = ("none", "temperature", "platt", "isotonic")
#: the ``format`` of a bundle's calibration.json
CALIBRATION_FORMAT = "medcoder.calibration.v1"

_CLIP = 1e-7  # logit()'s clipping
# isotonic: weight of the raw sigmoid blended into the step values, so that no two steps are equal
_BLEND = 1e-6
# isotonic: its steps stay this far below 1. A step of 1.0 (every dev pair above some score gold) would
# map every higher score to within float32's resolution of 1 (6e-8), tying the codes a note ranks first.
_TOP_MARGIN = 1e-3
# how far (on the standardised score) the fitted slopes may go: wide enough for any sane score scale
_SLOPE_BOUNDS = (1e-4, 1e4)
_INTERCEPT_BOUND = 50.0
_PARAM_KEYS = {
    "none": (),
    "temperature": ("temperature",),
    "platt": ("a", "b"),
    "isotonic": ("x_thresholds", "y_thresholds"),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` float64 without overflow (numpy only: coding notes never imports scipy.optimize)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(probs: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` float64, ``p`` clipped to ``[1e-7, 1 - 1e-7]`` first."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(p) - np.log1p(-p)


def _score_logit(probs: np.ndarray) -> np.ndarray:
    """The logit of a model's probabilities, clipped only where it would be infinite.

    :func:`logit`'s clipping at 1e-7 would tie every code a model scores below 1e-7 (a
    neural model's long tail), and ties change a note's ranking; here only 0 and 1 are moved.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny, 1.0 - np.finfo(np.float64).epsneg)
    return np.log(p) - np.log1p(-p)


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def reliability(probs: np.ndarray, gold: np.ndarray, *, bins: int = 10) -> dict[str, Any]:
    """ECE and the reliability table of probability/gold pairs.

    Args:
        probs: float ``[n]`` in ``[0, 1]``.
        gold: bool ``[n]``, whether each pair is a gold code.
        bins: number of equal-width bins on ``[0, 1]``; bin ``i`` is ``[i/bins, (i+1)/bins)``,
            the last one also holds 1.0.

    Returns:
        ``{"ece", "n", "bins": [{"low", "high", "n", "mean_probability", "share_gold"}, ...]}``;
        an empty bin has n 0 and None means; ``ece`` is None when there are no pairs.
    """
    p = np.asarray(probs, dtype=np.float64)
    g = np.asarray(gold).astype(bool, copy=False)
    if p.ndim != 1 or g.shape != p.shape:
        raise ValueError(f"probs and gold must be 1-d of the same length, got shapes {p.shape} and {g.shape}")
    _check_positive_int(bins, "bins")
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("probs must be finite probabilities in [0, 1]")
    index = np.minimum(np.floor(p * bins), bins - 1).astype(np.int64)
    # p * bins can round across a bin edge: put each pair where its edges (i / bins) say it belongs
    index -= (index > 0) & (p < index / bins)
    index += (index < bins - 1) & (p >= (index + 1) / bins)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_gold = np.bincount(index, weights=g.astype(np.float64), minlength=bins)
    n = int(p.size)
    rows = []
    for i in range(bins):
        count = int(counts[i])
        rows.append(
            {
                "low": i / bins,
                "high": (i + 1) / bins,
                "n": count,
                "mean_probability": float(sum_p[i] / count) if count else None,
                "share_gold": float(sum_gold[i] / count) if count else None,
            }
        )
    # (n_bin / n) * |gold_bin / n_bin - p_bin / n_bin| = |gold_bin - p_bin| / n
    ece = float(np.abs(sum_gold - sum_p).sum() / n) if n else None
    return {"ece": ece, "n": n, "bins": rows}


def top_k_pairs(scores: np.ndarray, y: np.ndarray, *, k: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (score, gold, note) pairs of each note's ``k`` top-ranked codes, flattened note by note.

    Args:
        scores: float ``[n_notes, n_codes]``.
        y: bool ``[n_notes, n_codes]``, gold codes among the columns.
        k: codes per note (all of them when there are fewer than ``k``).

    Returns:
        ``(scores float64 [n_notes * k'], gold bool [same], note index int64 [same])`` with
        ``k' = min(k, n_codes)``, each note's codes in rank order (score descending, ties by
        column: ``np.argsort(-row, kind="stable")``).
    """
    s = np.asarray(scores, dtype=np.float64)
    gold = np.asarray(y).astype(bool, copy=False)
    if s.ndim != 2 or gold.shape != s.shape:
        raise ValueError(f"scores and y must both be [n_notes, n_codes], got {s.shape} and {gold.shape}")
    _check_positive_int(k, "k")
    top = np.argsort(-s, axis=1, kind="stable")[:, : min(k, s.shape[1])]
    notes = np.repeat(np.arange(s.shape[0], dtype=np.int64), top.shape[1])
    return (
        np.take_along_axis(s, top, axis=1).ravel(),
        np.take_along_axis(gold, top, axis=1).ravel(),
        notes,
    )


def ece_at_k(scores: np.ndarray, y: np.ndarray, *, k: int = 20, bins: int = 10) -> dict[str, Any]:
    """:func:`reliability` of each note's ``k`` top-ranked codes (ECE@k of METRICS.md)."""
    probs, gold, _ = top_k_pairs(scores, y, k=k)
    return reliability(probs, gold, bins=bins)


def _log_loss(probs: np.ndarray, gold: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1.0 - 1e-15)
    g = np.asarray(gold, dtype=bool)
    return float(-np.mean(np.where(g, np.log(p), np.log1p(-p))))


def _linear_log_loss(z: np.ndarray, y: np.ndarray, a: float, b: float) -> tuple[float, float, float]:
    """Mean log loss of ``sigmoid(a * z + b)`` against ``y`` (0/1 floats), and its gradient in (a, b)."""
    t = a * z + b
    loss = float(np.mean(np.logaddexp(0.0, t) - y * t))
    residual = (_sigmoid(t) - y) / len(z)
    return loss, float(residual @ z), float(residual.sum())


def _fit_temperature(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize_scalar

    spread = float(np.std(x)) or 1.0
    low, high = math.log(min(1.0, spread) * _SLOPE_BOUNDS[0]), math.log(max(1.0, spread) * _SLOPE_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: _linear_log_loss(x, y, math.exp(-log_t), 0.0)[0],
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return {"temperature": float(math.exp(result.x))}


def _fit_platt(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize

    # fitted on the standardised score, so one set of bounds suits scores of any scale
    mean, spread = float(np.mean(x)), float(np.std(x)) or 1.0
    z = (x - mean) / spread

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        slope = math.exp(theta[0])
        value, grad_a, grad_b = _linear_log_loss(z, y, slope, float(theta[1]))
        return value, np.array([grad_a * slope, grad_b])

    result = minimize(
        loss,
        np.zeros(2),
        jac=True,
        method="L-BFGS-B",
        bounds=[(math.log(_SLOPE_BOUNDS[0]), math.log(_SLOPE_BOUNDS[1])), (-_INTERCEPT_BOUND, _INTERCEPT_BOUND)],
    )
    slope, intercept = math.exp(float(result.x[0])), float(result.x[1])
    return {"a": slope / spread, "b": intercept - slope * mean / spread}


def _fit_isotonic(x: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True).fit(x, y)
    return {
        "x_thresholds": [float(v) for v in model.X_thresholds_],
        "y_thresholds": [float(v) for v in model.y_thresholds_],
    }


def _isotonic_knots(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing knots from isotonic steps: each flat step becomes one knot at its centre.

    The knot's value is the step's, with ``1e-6 * sigmoid(centre)`` blended in (so no two knots are equal
    and none is 0), scaled to stay at least 1e-3 below 1 (so float32 can still order the scores above it).
    """
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ys) != 0) + 1])
    ends = np.concatenate([starts[1:], [len(ys)]]) - 1
    centres = (xs[starts] + xs[ends]) / 2
    values = (1.0 - _BLEND - _TOP_MARGIN) * ys[starts] + _BLEND * _sigmoid(centres)
    return centres, values


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MedcoderError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise MedcoderError(f"{where} must be a non-empty list of numbers, got {type(value).__name__}")
    return [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _check_params(method: Any, params: Any, source: str) -> dict[str, Any]:
    """``params`` of ``method`` as plain floats / lists of floats; MedcoderError naming ``source`` otherwise."""
    if method not in CALIBRATION_METHODS:
        raise MedcoderError(f"{source}: method must be one of {', '.join(CALIBRATION_METHODS)}; got {method!r}")
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise MedcoderError(f"{source}: params must be an object, got {type(params).__name__}")
    expected = _PARAM_KEYS[method]
    if set(params) != set(expected):
        raise MedcoderError(
            f"{source}: method {method!r} takes params {', '.join(expected) or 'none'}; got {', '.join(map(str, params)) or 'none'}"
        )
    if method == "temperature":
        value = _number(params["temperature"], f"{source}: temperature")
        if value <= 0:
            raise MedcoderError(f"{source}: temperature must be > 0, got {value}")
        return {"temperature": value}
    if method == "platt":
        a, b = _number(params["a"], f"{source}: a"), _number(params["b"], f"{source}: b")
        if a <= 0:
            raise MedcoderError(f"{source}: a must be > 0 (a calibrator must keep the ranking), got {a}")
        return {"a": a, "b": b}
    if method == "isotonic":
        xs = _numbers(params["x_thresholds"], f"{source}: x_thresholds")
        ys = _numbers(params["y_thresholds"], f"{source}: y_thresholds")
        if len(xs) != len(ys):
            raise MedcoderError(f"{source}: {len(xs)} x_thresholds but {len(ys)} y_thresholds")
        if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
            raise MedcoderError(f"{source}: x_thresholds must be strictly increasing")
        if any(b < a for a, b in zip(ys, ys[1:], strict=False)) or ys[0] < 0 or ys[-1] > 1:
            raise MedcoderError(f"{source}: y_thresholds must be non-decreasing probabilities in [0, 1]")
        return {"x_thresholds": xs, "y_thresholds": ys}
    return {}


class Calibrator:
    """A monotone map from a real-valued score (a logit) to a probability, fitted on dev.

    Strictly increasing for every method, so a note's ranking never changes. Isotonic
    regression is a step function; applied as fitted its flat steps would tie codes (at
    float32, even with a small slope blended in), so it is applied as a *centred* isotonic
    map: linear between the centres of its steps, each step's value ``v`` taken as
    ``(1 - 1e-6 - 1e-3) * v + 1e-6 * sigmoid(centre)`` (no two equal, none 0, none within
    1e-3 of 1, where float32 could no longer order the scores above it), and beyond the outermost centres
    proportional to the raw sigmoid (below: ``v0 * sigmoid(x) / sigmoid(c0)``; above:
    ``1 - (1 - vK) * sigmoid(-x) / sigmoid(-cK)``), so the tails keep their order too.
    """

    method: str

    def __init__(self, method: str = "none", params: dict[str, Any] | None = None) -> None:
        self.params = _check_params(method, params, "calibration")
        self.method = method
        if method == "isotonic":
            self._knots = _isotonic_knots(np.array(self.params["x_thresholds"]), np.array(self.params["y_thresholds"]))

    @classmethod
    def fit(cls, logits: np.ndarray, gold: np.ndarray, method: str, *, seed: int = 0) -> Calibrator:
        """Fit ``method`` on scores ``logits`` ``[n]`` and gold flags ``gold`` ``[n]`` (every method is
        deterministic: ``seed`` is accepted for a uniform signature)."""
        del seed
        if method not in CALIBRATION_METHODS:
            raise MedcoderError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}; got {method!r}")
        x = np.asarray(logits, dtype=np.float64).ravel()
        y = np.asarray(gold).astype(bool, copy=False).ravel().astype(np.float64)
        if x.shape != y.shape:
            raise ValueError(f"logits and gold must have the same size, got {x.size} and {y.size}")
        if method == "none":
            return cls("none")
        if x.size == 0:
            raise MedcoderError(f"cannot fit {method} calibration on no pairs")
        if not np.all(np.isfinite(x)):
            raise MedcoderError(f"cannot fit {method} calibration: the scores contain NaN or infinite values")
        if method == "temperature":
            return cls(method, _fit_temperature(x, y))
        if method == "platt":
            return cls(method, _fit_platt(x, y))
        return cls(method, _fit_isotonic(x, y))

    def _apply(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities float64, same shape as ``logits``."""
        x = np.asarray(logits, dtype=np.float64)
        if self.method == "none":
            return _sigmoid(x)
        if self.method == "temperature":
            return _sigmoid(x / self.params["temperature"])
        if self.method == "platt":
            return _sigmoid(self.params["a"] * x + self.params["b"])
        centres, values = self._knots
        flat = x.reshape(-1)
        out = np.interp(flat, centres, values)
        below, above = flat < centres[0], flat > centres[-1]
        out[below] = values[0] * _sigmoid(flat[below]) / _sigmoid(centres[0])
        out[above] = 1.0 - (1.0 - values[-1]) * _sigmoid(-flat[above]) / _sigmoid(-centres[-1])
        return out.reshape(x.shape)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities float32, same shape as ``logits``."""
        return self._apply(logits).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"method": ..., "params": {...}}``."""
        params = {k: list(v) if isinstance(v, list) else v for k, v in self.params.items()}
        return {"method": self.method, "params": params}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "calibration") -> Calibrator:
        """The calibrator :meth:`to_dict` wrote; a MedcoderError naming ``source`` on anything else."""
        if not isinstance(data, Mapping):
            raise MedcoderError(f"{source}: expected an object with 'method' and 'params', got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - {"method", "params"})
        if unknown:
            raise MedcoderError(f"{source}: unknown key(s) {', '.join(unknown)} (expected method, params)")
        if "method" not in data:
            raise MedcoderError(f"{source}: 'method' is missing")
        method = data["method"]
        return cls(method, _check_params(method, data.get("params"), source))

    def __repr__(self) -> str:
        if self.method == "isotonic":
            return f"Calibrator('isotonic', {len(self.params['x_thresholds'])} points)"
        return f"Calibrator({self.method!r}, {self.params})"


def calibrate_probabilities(calibrator: Calibrator | None, probs: np.ndarray) -> np.ndarray:
    """A model's probabilities as ``calibrator`` maps them, float32; untouched (as float32) for None or "none".

    The logit taken here is clipped only where it would be infinite, so codes scored below
    1e-7 keep their order (see :func:`_score_logit`).
    """
    if calibrator is None or calibrator.method == "none":
        return np.asarray(probs, dtype=np.float32)
    return calibrator(_score_logit(probs))


def fit_on_probabilities(
    scores: np.ndarray, y: np.ndarray, method: str, *, k: int = 20, seed: int = 0, bins: int = 10
) -> tuple[Calibrator, list[dict[str, Any]]]:
    """A calibrator for a model's probabilities ``scores`` ``[n_notes, n_codes]``, fitted on each note's top-``k``
    codes against gold ``y``, and the cross-validated rows of :func:`choose_calibrator`.

    ``method`` "auto": the method :func:`choose_calibrator` picks; another method is fitted as asked (the
    rows still compare every method); "none": no fit and no rows.
    """
    if method == "none":
        return Calibrator("none"), []
    probs, gold, notes = top_k_pairs(scores, y, k=k)
    logits = _score_logit(probs)
    chosen, rows = choose_calibrator(logits, gold, notes, seed=seed, bins=bins)
    if method == "auto" or chosen.method == method or (rows and rows[0].get("note")):
        return chosen, rows  # asked for auto, or nothing could be fitted
    return Calibrator.fit(logits, gold, method, seed=seed), rows


def choose_calibrator(
    logits: np.ndarray,
    gold: np.ndarray,
    groups: np.ndarray,
    *,
    methods: Sequence[str] = CALIBRATION_METHODS,
    folds: int = 5,
    seed: int = 0,
    bins: int = 10,
) -> tuple[Calibrator, list[dict[str, Any]]]:
    """Pick the calibration method by cross-validated ECE, then fit it on all the pairs.

    The groups (e.g. each pair's note) are dealt into ``folds`` folds at random for ``seed``;
    each method is fitted on the other folds and applied to the held-out one, and one
    :func:`reliability` ECE is taken over all the held-out probabilities. The lowest
    ``cv_ece`` wins; a tie goes to the method earlier in :data:`CALIBRATION_METHODS` (the
    simpler one).

    Returns:
        ``(calibrator fitted on all pairs, rows [{"method", "cv_ece", "cv_log_loss"}, ...])``;
        with fewer than 2 groups or pairs of only one class, ``Calibrator("none")`` and one row
        whose ``note`` says why nothing was fitted.
    """
    x = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(gold).astype(bool, copy=False).ravel()
    g = np.asarray(groups).ravel()
    if not (x.shape == y.shape == g.shape):
        raise ValueError(f"logits, gold and groups must have the same size, got {x.size}, {y.size}, {g.size}")
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in CALIBRATION_METHODS]
    if unknown or not methods:
        raise MedcoderError(f"calibration methods must be among {', '.join(CALIBRATION_METHODS)}; got {methods!r}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    unique = np.unique(g)
    reason = None
    if len(unique) < 2:
        reason = f"{len(unique)} group(s) of pairs: cannot cross-validate"
    elif y.all() or not y.any():
        reason = "the pairs are all gold or all not gold: nothing to calibrate against"
    if reason is not None:
        return Calibrator("none"), [{"method": "none", "cv_ece": None, "cv_log_loss": None, "note": reason}]

    n_folds = min(folds, len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique)) % n_folds
    fold = fold_of_group[np.searchsorted(unique, g)]
    rows = []
    for method in methods:
        held_out = np.empty(x.size, dtype=np.float64)
        for f in range(n_folds):
            out = fold == f
            held_out[out] = Calibrator.fit(x[~out], y[~out], method, seed=seed)._apply(x[out])
        rows.append(
            {
                "method": method,
                "cv_ece": reliability(held_out, y, bins=bins)["ece"],
                "cv_log_loss": _log_loss(held_out, y),
            }
        )
    # rounded, so that methods equal but for float noise (temperature ~1 vs none) count as a tie
    best = min(rows, key=lambda row: (round(row["cv_ece"], 12), CALIBRATION_METHODS.index(row["method"])))
    return Calibrator.fit(x, y, best["method"], seed=seed), rows
