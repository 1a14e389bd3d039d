"""Metrics against hand-computed values, and against sklearn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medcoder.evaluation import metrics as m

# 3 docs x 4 labels, used by most tests below.
Y_TRUE = np.array(
    [
        [1, 0, 1, 0],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
    ],
    dtype=bool,
)
Y_PRED = np.array(
    [
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 1, 1],
    ],
    dtype=bool,
)
# Ties on purpose: d0 has labels 1 and 2 at 0.5, d1 is all 0.2, d2 has 1 and 3 at 0.8.
SCORES = np.array(
    [
        [0.9, 0.5, 0.5, 0.1],
        [0.2, 0.2, 0.2, 0.2],
        [0.3, 0.8, 0.1, 0.8],
    ]
)


def test_micro_prf_hand_computed() -> None:
    # TP: (d0,L0) (d1,L1) (d2,L0) = 3
    # FP: (d0,L1) (d2,L2) (d2,L3) = 3
    # FN: (d0,L2) (d2,L1)         = 2
    # P = 3/6, R = 3/5, F1 = 2*3 / (2*3 + 3 + 2) = 6/11
    p, r, f1 = m.micro_prf(Y_TRUE, Y_PRED)
    assert p == pytest.approx(0.5)
    assert r == pytest.approx(0.6)
    assert f1 == pytest.approx(6 / 11)


def test_per_label_and_macro_prf_hand_computed() -> None:
    # L0: TP2 FP0 FN0 -> P1 R1 F1 1
    # L1: TP1 FP1 FN1 -> P.5 R.5 F1 .5
    # L2: TP0 FP1 FN1 -> 0 0 0
    # L3: TP0 FP1 FN0 (no gold) -> 0 0 0
    np.testing.assert_allclose(m.per_label_f1(Y_TRUE, Y_PRED), [1.0, 0.5, 0.0, 0.0])
    # all labels: (1 + .5 + 0 + 0) / 4 = .375 for P, R and F1
    assert m.macro_prf(Y_TRUE, Y_PRED) == pytest.approx((0.375, 0.375, 0.375))
    # labels with >= 1 gold doc (L0, L1, L2): (1 + .5 + 0) / 3 = .5
    with_gold = Y_TRUE.any(axis=0)
    assert m.macro_prf(Y_TRUE, Y_PRED, labels_mask=with_gold) == pytest.approx((0.5, 0.5, 0.5))


def test_macro_prf_no_gold_no_prediction_scores_zero_and_empty_mask_is_nan() -> None:
    # L1 has neither gold nor prediction: its F1 is 0, so the mean is (1 + 0) / 2.
    y = np.array([[1, 0]], dtype=bool)
    assert m.macro_prf(y, y)[2] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in m.macro_prf(y, y, labels_mask=np.zeros(2, bool)))


def test_exact_match_hand_computed() -> None:
    # only d1 ({L1} vs {L1}) matches exactly -> 1/3
    assert m.exact_match(Y_TRUE, Y_PRED) == pytest.approx(1 / 3)


def test_precision_at_k_with_ties_broken_by_column_index() -> None:
    # Rankings (descending score, ties by column):
    #   d0: L0 L1 L2 L3   gold {0,2}
    #   d1: L0 L1 L2 L3   gold {1}
    #   d2: L1 L3 L0 L2   gold {0,1}
    # P@1 = (1 + 0 + 1) / 3 = 2/3
    # P@2 = (1/2 + 1/2 + 1/2) / 3 = 1/2   (d0 would be 2/2 if L2 beat L1 in the tie)
    # P@3 = (2/3 + 1/3 + 2/3) / 3 = 5/9
    assert m.precision_at_k(Y_TRUE, SCORES, 1) == pytest.approx(2 / 3)
    assert m.precision_at_k(Y_TRUE, SCORES, 2) == pytest.approx(1 / 2)
    assert m.precision_at_k(Y_TRUE, SCORES, 3) == pytest.approx(5 / 9)
    # k beyond the number of labels still divides by k: (2 + 1 + 2) / 6 / 3
    assert m.precision_at_k(Y_TRUE, SCORES, 6) == pytest.approx(5 / 18)


def test_precision_at_k_skip_empty() -> None:
    y = np.vstack([Y_TRUE, np.zeros((1, 4), bool)])
    s = np.vstack([SCORES, np.full((1, 4), 0.5)])
    # kept: P@1 over 4 docs = (1 + 0 + 1 + 0) / 4; skipped: the 3 docs above, 2/3
    assert m.precision_at_k(y, s, 1) == pytest.approx(0.5)
    assert m.precision_at_k(y, s, 1, skip_empty=True) == pytest.approx(2 / 3)


def test_rank_order_is_deterministic_on_ties() -> None:
    np.testing.assert_array_equal(m.rank_order(SCORES), [[0, 1, 2, 3], [0, 1, 2, 3], [1, 3, 0, 2]])


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_at_k_agrees_with_full_ranking_on_ties(seed: int) -> None:
    # precision_at_k avoids a full sort; it must pick the same top-k as rank_order.
    rng = np.random.default_rng(seed)
    y = rng.random((30, 20)) < 0.3
    scores = np.round(rng.random((30, 20)), 1)
    order = m.rank_order(scores)
    for k in (1, 3, 8, 20):
        expected = np.take_along_axis(y, order[:, :k], axis=1).sum(axis=1).mean() / k
        assert m.precision_at_k(y, scores, k) == pytest.approx(expected)


def test_map_hand_computed() -> None:
    # d0: ranks L0(g) L1 L2(g) L3 -> (1/1 + 2/3) / 2 = 5/6
    # d1: ranks L0 L1(g) ...      -> (1/2) / 1     = 1/2
    # d2: ranks L1(g) L3 L0(g) L2 -> (1/1 + 2/3) / 2 = 5/6
    # MAP = (5/6 + 1/2 + 5/6) / 3 = 13/18
    assert m.mean_average_precision(Y_TRUE, SCORES) == pytest.approx(13 / 18)


def test_map_with_unrankable_gold_codes() -> None:
    # Same hits, but d0 has 1 and d2 has 2 more gold codes the model cannot rank:
    # d0: (1 + 2/3) / 3 = 5/9;  d1: 1/2;  d2: (1 + 2/3) / 4 = 5/12
    # MAP = (20/36 + 18/36 + 15/36) / 3 = 53/108
    n_gold = np.array([3, 1, 4])
    assert m.mean_average_precision(Y_TRUE, SCORES, n_gold=n_gold) == pytest.approx(53 / 108)


def test_map_skips_docs_without_gold_and_counts_invisible_gold_as_zero() -> None:
    y = np.vstack([Y_TRUE, np.zeros((2, 4), bool)])
    s = np.vstack([SCORES, np.full((2, 4), 0.5)])
    # doc 3 has no gold at all: skipped. doc 4 has 2 gold codes, none rankable: AP 0.
    # MAP = (5/6 + 1/2 + 5/6 + 0) / 4 = 13/24
    n_gold = np.array([2, 1, 2, 0, 2])
    assert m.mean_average_precision(y, s, n_gold=n_gold) == pytest.approx(13 / 24)
    with pytest.raises(ValueError, match="n_gold"):
        m.mean_average_precision(Y_TRUE, SCORES, n_gold=np.array([1, 1, 1]))


def test_auc_hand_computed() -> None:
    # Micro: 5 positives (.9 .5 .2 .3 .8) vs 7 negatives (.5 .1 .2 .2 .2 .1 .8);
    # negatives beaten (+ half for ties) per positive:
    #   .9 -> 7;  .5 -> 5 + .5;  .2 -> 2 + 3*.5;  .3 -> 5;  .8 -> 6 + .5
    # AUC = (7 + 5.5 + 3.5 + 5 + 6.5) / (5 * 7) = 27.5 / 35
    assert m.micro_auc(Y_TRUE, SCORES) == pytest.approx(27.5 / 35)
    # Macro, L3 has no positive so it is left out:
    #   L0: pos .9 .3 vs neg .2 -> 1;  L1: pos .2 .8 vs neg .5 -> 1/2;  L2: pos .5 vs .2 .1 -> 1
    # (1 + .5 + 1) / 3 = 5/6
    assert m.macro_auc(Y_TRUE, SCORES) == pytest.approx(5 / 6)


def test_auc_undefined_is_nan() -> None:
    y = np.ones((2, 2), bool)
    assert math.isnan(m.micro_auc(y, np.ones((2, 2))))
    assert math.isnan(m.macro_auc(y, np.ones((2, 2))))


def test_f1_by_frequency_bins_hand_computed() -> None:
    # per-label F1 is [1, .5, 0, 0]; train frequencies put L0 unseen, L1 in "1",
    # L2 in "2-5" and L3 in "51+"; "6-10" and "11-50" are empty.
    bins = m.f1_by_frequency_bins(Y_TRUE, Y_PRED, np.array([0, 1, 3, 60]))
    assert [b["bin"] for b in bins] == ["0 (unseen)", "1", "2-5", "6-10", "11-50", "51+"]
    assert [b["n_labels"] for b in bins] == [1, 1, 1, 0, 0, 1]
    f1s = [b["macro_f1"] for b in bins]
    assert f1s[:3] == [1.0, 0.5, 0.0] and f1s[5] == 0.0
    assert math.isnan(f1s[3]) and math.isnan(f1s[4])


def test_multiclass_hand_computed() -> None:
    # gold [0 0 1 2], pred [0 1 1 1]: accuracy 2/4.
    # class 0: TP1, 2 gold, 1 pred -> 2/3; class 1: TP1, 1 gold, 3 pred -> 2/4;
    # class 2: 0; class 3 (no gold, no pred): 0.  Macro = (2/3 + 1/2) / 4 = 7/24
    t, p = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    assert m.accuracy(t, p) == pytest.approx(0.5)
    assert m.macro_f1_multiclass(t, p, 4) == pytest.approx(7 / 24)
    with pytest.raises(ValueError):
        m.macro_f1_multiclass(t, p, 2)


def _random_case(seed: int, n_docs: int = 40, n_labels: int = 25) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.random((n_docs, n_labels)) < 0.15
    scores = rng.random((n_docs, n_labels))
    return y, scores, scores >= 0.7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_sklearn(seed: int) -> None:
    y, _, pred = _random_case(seed)
    assert m.micro_prf(y, pred)[2] == pytest.approx(f1_score(y, pred, average="micro"))
    assert m.macro_prf(y, pred)[2] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    np.testing.assert_allclose(m.per_label_f1(y, pred), f1_score(y, pred, average=None, zero_division=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    y, scores, _ = _random_case(seed)
    scores = np.round(scores, 1)  # coarse scores: many ties
    assert m.micro_auc(y, scores) == pytest.approx(roc_auc_score(y.ravel(), scores.ravel()))
    both = y.any(axis=0) & ~y.all(axis=0)
    expected = roc_auc_score(y[:, both], scores[:, both], average="macro")
    assert m.macro_auc(y, scores) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn_average_precision(seed: int) -> None:
    # Without ties sklearn's step-wise AP equals the CodiEsp definition.
    y, scores, _ = _random_case(seed)
    rows = y.any(axis=1)
    expected = np.mean([average_precision_score(y[i], scores[i]) for i in np.flatnonzero(rows)])
    assert m.mean_average_precision(y, scores) == pytest.approx(expected)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        m.micro_prf(Y_TRUE, Y_PRED[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        m.precision_at_k(Y_TRUE, np.full((3, 4), np.nan), 1)
