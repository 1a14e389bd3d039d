"""Threshold tuning: known optima, brute-force agreement, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcoder.errors import InputError
from medcoder.evaluation.metrics import micro_prf, per_label_f1
from medcoder.evaluation.thresholds import (
    Thresholds,
    apply_thresholds,
    tune_global_threshold,
    tune_per_label_thresholds,
)


def test_global_threshold_designed_optimum() -> None:
    # Sorted: .9(+) .8(-) .7(+) .6(+) .4(-) .2(-), 3 positives; F1 = 2TP / (n_pred + 3):
    #   >=.9: 2/4   >=.8: 2/5   >=.7: 4/6   >=.6: 6/7   >=.4: 6/8   >=.2: 6/9
    # Best cut-off .6; midpoint to the next score .4 -> .5
    scores = np.array([[0.9, 0.8, 0.2], [0.7, 0.6, 0.4]])
    y = np.array([[1, 0, 0], [1, 1, 0]], bool)
    assert tune_global_threshold(y, scores) == pytest.approx(0.5)


def test_global_threshold_respects_ties() -> None:
    # Three .5 scores (2 positive) cannot be split: >=.5 gives 2*2/(3+2) = .8,
    # >=.1 gives 4/6. The cut-off is .5 and the threshold (.5 + .1) / 2.
    scores = np.array([[0.5, 0.5], [0.5, 0.1]])
    y = np.array([[1, 0], [1, 0]], bool)
    assert tune_global_threshold(y, scores) == pytest.approx(0.3)


def test_global_threshold_predict_everything_and_no_positive() -> None:
    # Every pair positive: predicting all is best, and the lowest score is returned.
    scores = np.array([[0.9, 0.2]])
    assert tune_global_threshold(np.ones((1, 2), bool), scores) == 0.2
    # No positive at all: predict nothing, a threshold just above the maximum.
    t = tune_global_threshold(np.zeros((1, 2), bool), scores)
    assert t > 0.9 and not apply_thresholds(scores, t).any()


def _brute_force_best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    candidates = np.append(np.unique(scores), np.inf)
    return max(micro_prf(y, scores >= t)[2] for t in candidates)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decimals", [2, None])
def test_global_threshold_matches_brute_force(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random((30, 20)) < 0.2
    # Positives score higher on average so the optimum is not trivially "all".
    scores = rng.random((30, 20)) + 0.4 * y
    if decimals is not None:
        scores = np.round(scores, decimals)
    t = tune_global_threshold(y, scores)
    achieved = micro_prf(y, apply_thresholds(scores, t))[2]
    assert abs(achieved - _brute_force_best_f1(y, scores)) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_per_label_thresholds_optimal_and_not_worse_than_global(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random((40, 12)) < 0.25
    y[:, 0] = False  # a label with no positive dev doc gets the fallback
    scores = np.round(rng.random((40, 12)) + 0.3 * y, 2)
    global_t = tune_global_threshold(y, scores)
    per_label = tune_per_label_thresholds(y, scores, fallback=global_t)
    assert per_label.shape == (12,)
    assert per_label[0] == global_t
    f1_per = per_label_f1(y, apply_thresholds(scores, per_label))
    f1_glob = per_label_f1(y, apply_thresholds(scores, global_t))
    assert np.all(f1_per >= f1_glob - 1e-12)
    assert f1_per.mean() >= f1_glob.mean()
    for j in range(1, 12):
        col_y, col_s = y[:, [j]], scores[:, [j]]
        assert f1_per[j] == pytest.approx(_brute_force_best_f1(col_y, col_s), abs=1e-9)


def test_apply_thresholds_uses_greater_or_equal() -> None:
    scores = np.array([[0.5, 0.4], [0.6, 0.5]])
    np.testing.assert_array_equal(apply_thresholds(scores, 0.5), [[True, False], [True, True]])
    np.testing.assert_array_equal(apply_thresholds(scores, np.array([0.6, 0.4])), [[False, True], [True, True]])
    with pytest.raises(ValueError, match="thresholds"):
        apply_thresholds(scores, np.array([0.1, 0.2, 0.3]))


def test_thresholds_json_round_trip_and_validation() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1]], bool)
    scores = np.array([[0.8, 0.3], [0.2, 0.6], [0.7, 0.4]])
    tuned = Thresholds.tune(y, scores, "per_label")
    assert tuned.strategy == "per_label" and len(tuned.per_label or []) == 2
    restored = Thresholds.from_dict(json.loads(json.dumps(tuned.to_dict())))
    assert restored == tuned
    np.testing.assert_array_equal(restored.apply(scores), y)

    glob = Thresholds("global", 0.5)
    assert Thresholds.from_dict(glob.to_dict()) == glob
    assert glob.to_dict() == {"strategy": "global", "global": 0.5, "per_label": None}
    with pytest.raises(InputError, match="unknown keys"):
        Thresholds.from_dict({"strategy": "global", "global": 0.5, "globl": 1})
    with pytest.raises(InputError, match="per_label"):
        Thresholds("per_label", 0.5)
    with pytest.raises(InputError, match="strategy"):
        Thresholds.from_dict({"strategy": "best", "global": 0.5})
