"""Dense and sparse scores through the one figures module: the same numbers on the same data, and one tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcoder.evaluation import metrics as m
from medcoder.evaluation.figures import sparse_layout
from medcoder.evaluation.open_set import evaluate_open_set, tune_open_set_threshold
from medcoder.evaluation.scoring import evaluate_multilabel
from medcoder.evaluation.thresholds import Thresholds, tune_global_threshold

CODES = ["A", "B", "C", "D"]
# D is a catalog code no train note carries (unseen, yet the model scores it); X: unseen and scored by nobody
TRAIN_FREQ = {"A": 3, "B": 2, "C": 1}
SCORES = np.array(
    [
        [0.9, 0.6, 0.6, 0.1],  # B and C tie
        [0.2, 0.7, 0.3, 0.7],  # B and D tie
        [0.5, 0.5, 0.2, 0.0],  # A and B tie; D scored 0
    ]
)
GOLD = [["A", "C", "X"], ["B"], ["D", "A"]]
ROWS = [dict(zip(CODES, row.tolist(), strict=True)) for row in SCORES]  # listed in code order, as a model's


@pytest.fixture(scope="module")
def dense() -> dict:
    return evaluate_multilabel(GOLD, SCORES, CODES, Thresholds("global", 0.5), TRAIN_FREQ, ks=(1, 2))


@pytest.fixture(scope="module")
def sparse() -> dict:
    seen = {c for c, n in TRAIN_FREQ.items() if n > 0}
    return evaluate_open_set(ROWS, GOLD, seen, threshold=0.5, train_codes=CODES, k=2)


def test_ranking_figures_by_hand_are_the_same_dense_and_sparse(dense: dict, sparse: dict) -> None:
    every = dense["all_gold"]
    # AP: note 0 hits at ranks 1 and 3 of 3 gold (X never ranks): (1 + 2/3) / 3; note 1: 1;
    # note 2: A at rank 1 (before B, the tie by column), D at rank 4: (1 + 2/4) / 2
    expected_map = (5 / 9 + 1 + 3 / 4) / 3
    assert every["map"] == pytest.approx(expected_map) and sparse["all"]["map"] == every["map"]
    assert every["p_at_2"] == sparse["all"]["p_at_2"] == pytest.approx(0.5)
    assert every["p_at_1"] == 1.0
    assert sparse["all"]["recall@10"] == pytest.approx(5 / 6)  # every gold code but X


def test_decision_figures_by_hand_are_the_same_dense_and_sparse(dense: dict, sparse: dict) -> None:
    every, other = dense["all_gold"], sparse["all"]
    # >= 0.5: note 0 A B C, note 1 B D, note 2 A B -> TP 4 (A C, B, A), FP 3, FN 2 (X, D)
    assert every["micro_precision"] == pytest.approx(4 / 7) and other["micro_precision"] == pytest.approx(4 / 7)
    assert every["micro_recall"] == pytest.approx(2 / 3) and other["micro_recall"] == pytest.approx(2 / 3)
    # 2TP / (2TP + FP + FN) and the harmonic mean of P and R: the same number, up to rounding
    assert every["micro_f1"] == pytest.approx(8 / 13) and other["micro_f1"] == pytest.approx(8 / 13, abs=1e-15)
    # per code F1: A 1, B 2/4, C 1, D 0, X 0 over the label space train ∪ gold = {A, B, C, D, X}
    assert every["macro_f1"] == pytest.approx(2.5 / 5) and other["macro_f1"] == pytest.approx(every["macro_f1"])
    assert every["macro_f1_with_gold"] == pytest.approx(other["macro_f1_with_gold"])
    assert other["label_space"] == every["n_labels"] == 5


def test_unseen_gold_figures_are_the_same_dense_and_sparse(dense: dict, sparse: dict) -> None:
    unseen, other = dense["all_gold"]["unseen_gold"], sparse["unseen"]
    # note 0: X (nobody scores it) AP 0; note 2: A (seen) leaves, D ranks 3rd after B, C: AP 1/3; note 1 drops out
    assert (unseen["n_docs"], unseen["n_gold"]) == (other["notes"], other["gold_assignments"]) == (2, 2)
    assert unseen["map"] == other["map"] == pytest.approx(1 / 6)
    assert unseen["recall_at_10"] == other["recall@10"] == pytest.approx(1 / 2)


def test_open_set_threshold_is_the_dense_search_by_the_cut_rule() -> None:
    y = np.array([[c in g for c in CODES] for g in GOLD])
    # the best micro-F1 cut is "score >= 0.5" (TP 4 of 7 predicted, 6 gold with X): F1 8/13
    assert tune_open_set_threshold(ROWS, GOLD) == 0.5
    assert tune_global_threshold(y, SCORES, n_gold=6, rule="cut") == 0.5
    # a model's threshold sits halfway to the next lower score: the same predictions on dev
    assert tune_global_threshold(y, SCORES) == pytest.approx(0.4)
    assert np.array_equal(SCORES >= 0.4, SCORES >= 0.5)


def _brute_force_threshold(rows: list[dict[str, float]], gold: list[list[str]]) -> float:
    """Every score tried as "predict at least this"; the highest among the best micro-F1s."""
    n_gold = sum(len(set(g)) for g in gold)
    best, best_f1 = 1.0, -1.0
    for t in sorted({s for row in rows for s in row.values()}, reverse=True):
        tp = sum(1 for row, g in zip(rows, gold, strict=True) for c, s in row.items() if s >= t and c in g)
        n_pred = sum(1 for row in rows for s in row.values() if s >= t)
        f1 = 2 * tp / (n_pred + n_gold)
        if f1 > best_f1:
            best, best_f1 = t, f1
    return best


def _random_case(seed: int) -> tuple[np.ndarray, list[str], list[list[str]], dict[str, int]]:
    rng = np.random.default_rng(seed)
    n_notes, n_codes = 12, 15
    scores = np.round(rng.random((n_notes, n_codes)), 1)  # one decimal: many ties
    codes = [f"C{j:02d}" for j in range(n_codes)]
    gold = []
    for _ in range(n_notes):
        g = [codes[j] for j in np.flatnonzero(rng.random(n_codes) < 0.2)] or [codes[int(rng.integers(n_codes))]]
        gold.append(g + (["NEW"] if rng.random() < 0.3 else []))  # NEW: scored by nobody, unseen
    train_freq = {c: int(rng.integers(0, 3)) for c in codes}  # some codes unseen in train
    return scores, codes, gold, train_freq


@pytest.mark.parametrize("seed", range(8))
def test_dense_and_sparse_agree_on_random_tied_scores(seed: int) -> None:
    scores, codes, gold, train_freq = _random_case(seed)
    rows = [dict(zip(codes, row.tolist(), strict=True)) for row in scores]
    threshold = tune_open_set_threshold(rows, gold)
    assert threshold == _brute_force_threshold(rows, gold)
    dense = evaluate_multilabel(gold, scores, codes, Thresholds("global", threshold), train_freq, ks=(8,))
    seen = {c for c, n in train_freq.items() if n > 0}
    # the same label space: the model's codes (some unseen in train) ∪ gold
    sparse = evaluate_open_set(rows, gold, seen, threshold=threshold, train_codes=codes)
    every, other = dense["all_gold"], sparse["all"]
    assert other["map"] == every["map"] and other["p_at_8"] == every["p_at_8"]
    for key in ("micro_precision", "micro_recall", "micro_f1", "macro_f1", "macro_f1_with_gold"):
        assert other[key] == pytest.approx(every[key], abs=1e-15), key
    assert other["label_space"] == every["n_labels"]
    unseen = every["unseen_gold"]
    assert (sparse["unseen"]["notes"], sparse["unseen"]["gold_assignments"]) == (unseen["n_docs"], unseen["n_gold"])
    assert sparse["unseen"]["map"] == unseen["map"] and sparse["unseen"]["recall@10"] == unseen["recall_at_10"]


def test_sparse_layout_has_a_column_only_for_codes_scored_or_gold() -> None:
    rows = [{"B": 0.5, "A": 0.7}, {}]
    layout = sparse_layout(rows, [["Z"], ["A"]], extra_codes=["T"], listing=True)
    assert layout.codes == ["A", "B", "T", "Z"] and layout.n_ranked == 2  # never one per catalog code
    assert layout.floor == pytest.approx(-0.5)  # an unscored cell sits below every score
    assert layout.scored.tolist() == [[True, True], [False, False]]
    assert layout.listing.tolist() == [[1, 0], [2, 2]]  # B was listed first in note 0


def test_sparse_ties_rank_as_listed_for_p_at_k_and_by_code_for_map() -> None:
    # B and A tie; the system listed B first. P@1 counts B (wrong); MAP ranks A first (by code)
    rows = [{"B": 0.5, "A": 0.5}]
    out = evaluate_open_set(rows, [["A"]], {"A", "B"}, threshold=0.5, train_codes=["A", "B"], k=1)["all"]
    assert out["p_at_1"] == 0.0 and out["map"] == 1.0


def test_open_set_figures_without_gold_are_nan() -> None:
    out = evaluate_open_set([{"A": 0.3}], [[]], {"A"}, threshold=0.5)
    assert out["all"]["notes"] == 0 and math.isnan(out["all"]["map"]) and "micro_f1" not in out["all"]
    unseen = out["unseen"]
    assert (unseen["notes"], unseen["gold_assignments"]) == (0, 0) and math.isnan(unseen["map"])
    assert tune_open_set_threshold([{}], [["A"]]) == 1.0  # nothing scored: nothing to tune


def test_recall_at_k_and_tie_order_by_hand() -> None:
    y = np.array([[True, False, True], [False, True, False]])
    s = np.array([[0.2, 0.9, 0.9], [0.5, 0.5, 0.1]])
    # by column, each note's gold code loses its tie: note 0 ranks col 1 before col 2, note 1 col 0 before col 1
    assert m.recall_at_k(y, s, 1) == 0.0
    assert m.recall_at_k(y, s, 2) == pytest.approx(2 / 3)  # col 2 of note 0 and col 1 of note 1, of 3 gold
    assert m.recall_at_k(y, s, 2, n_gold=np.array([3, 1])) == pytest.approx(2 / 4)  # a gold code outside: a miss
    tie = np.array([[0, 2, 1], [1, 0, 2]])
    np.testing.assert_array_equal(m.rank_order(s, tie_order=tie), [[2, 1, 0], [1, 0, 2]])
    assert m.precision_at_k(y, s, 1, tie_order=tie) == pytest.approx(1.0)
    assert m.precision_at_k(y, s, 1) == pytest.approx(0.0)
