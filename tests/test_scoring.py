"""evaluate_multilabel / evaluate_multiclass in the METRICS.md conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcoder.evaluation.report import format_metrics_table
from medcoder.evaluation.scoring import evaluate_multiclass, evaluate_multilabel
from medcoder.evaluation.thresholds import Thresholds

CODES = ["A", "B", "C"]
TRAIN_FREQ = {"A": 5, "B": 2, "C": 1}
# d0's "X" never occurs in train.
GOLD = [["A", "X"], ["B"], ["C", "A"]]
SCORES = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.3, 0.8, 0.55],
        [0.6, 0.2, 0.7],
    ]
)
# threshold .5 -> predictions d0 {A}, d1 {B, C}, d2 {A, C}


@pytest.fixture(scope="module")
def result() -> dict:
    return evaluate_multilabel(GOLD, SCORES, CODES, Thresholds("global", 0.5), TRAIN_FREQ, ks=(1, 2))


def test_all_gold_counts_unseen_code_as_miss(result: dict) -> None:
    a = result["all_gold"]
    # space A B C X. TP: d0A d1B d2A d2C = 4; FP: d1C = 1; FN: d0X = 1
    assert a["micro_precision"] == pytest.approx(0.8)
    assert a["micro_recall"] == pytest.approx(0.8)
    assert a["micro_f1"] == pytest.approx(0.8)
    # per-label F1: A 1, B 1, C 2/(2+1) = 2/3, X 0 -> (8/3) / 4; every label has gold
    assert a["macro_f1"] == pytest.approx(2 / 3)
    assert a["macro_f1_with_gold"] == pytest.approx(2 / 3)
    assert (a["n_docs"], a["n_labels"], a["n_unseen_codes"], a["n_unseen_assignments"]) == (
        3,
        4,
        1,
        1,
    )


def test_all_gold_map_divides_by_full_gold_count(result: dict) -> None:
    a = result["all_gold"]
    # d0 ranks A C B, gold A at rank 1 but |gold| = 2 (X unrankable) -> 1/2
    # d1 ranks B C A -> 1;  d2 ranks C A B, both gold -> (1 + 1) / 2 = 1
    # MAP = (1/2 + 1 + 1) / 3
    assert a["map"] == pytest.approx(5 / 6)
    # P@1: A, B, C all gold -> 1;  P@2: {A,C}: 1/2, {B,C}: 1/2, {C,A}: 1 -> 2/3
    assert a["p_at_1"] == pytest.approx(1.0)
    assert a["p_at_2"] == pytest.approx(2 / 3)
    # only d2 is predicted exactly
    assert a["exact_match"] == pytest.approx(1 / 3)


def test_all_gold_auc(result: dict) -> None:
    a = result["all_gold"]
    # positives .9 0(X) .8 .6 .7; negatives .1 .2 .3 .55 0 .2 0.
    # Each non-zero positive beats all 7; the X positive ties the two zero negatives:
    # (4 * 7 + 2 * .5) / 35 = 29/35
    assert a["micro_auc"] == pytest.approx(29 / 35)
    # A, B, C each separate perfectly (1); X is all zeros (1/2) -> 3.5 / 4
    assert a["macro_auc"] == pytest.approx(0.875)


def test_train_seen_removes_unseen_code(result: dict) -> None:
    s = result["train_seen"]
    # gold without X: TP 4, FP 1 (d1C), FN 0
    assert s["micro_precision"] == pytest.approx(0.8)
    assert s["micro_recall"] == pytest.approx(1.0)
    assert s["micro_f1"] == pytest.approx(8 / 9)
    # A 1, B 1, C 2/3 -> (8/3) / 3
    assert s["macro_f1"] == pytest.approx(8 / 9)
    assert s["map"] == pytest.approx(1.0)
    assert s["exact_match"] == pytest.approx(2 / 3)
    assert s["micro_auc"] == pytest.approx(1.0)
    assert (s["n_labels"], s["n_unseen_codes"], s["n_unseen_assignments"]) == (3, 0, 0)


def test_frequency_bins_and_json(result: dict) -> None:
    bins = {b["bin"]: (b["n_labels"], b["macro_f1"]) for b in result["f1_by_frequency"]}
    # X unseen (F1 0); C seen once (2/3); A (5) and B (2) both F1 1
    assert bins["0 (unseen)"] == (1, 0.0)
    assert bins["1"] == (1, pytest.approx(2 / 3))
    assert bins["2-5"] == (2, 1.0)
    assert bins["51+"] == (0, None)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result


def test_doc_with_only_unseen_gold_and_filtered_train_label() -> None:
    # The model dropped train label D; d0's only gold code X is unseen.
    out = evaluate_multilabel(
        [["X"], ["A", "D"]],
        np.array([[0.2, 0.9], [0.7, 0.4]]),
        ["A", "B"],
        Thresholds("global", 0.5),
        {"A": 3, "B": 1, "D": 2},
        ks=(1,),
    )
    a, s = out["all_gold"], out["train_seen"]
    # all gold (A B D X): TP d1A; FP d0B; FN d0X d1D -> P 1/2, R 1/3, F1 2/5
    assert (a["micro_precision"], a["micro_recall"]) == pytest.approx((0.5, 1 / 3))
    assert a["micro_f1"] == pytest.approx(0.4)
    # d0: nothing rankable -> AP 0; d1: A at rank 1, |gold| 2 -> 1/2. MAP 1/4
    assert a["map"] == pytest.approx(0.25)
    assert a["p_at_1"] == pytest.approx(0.5)
    assert a["n_labels"] == 4
    # train-seen (A B D): d0 has no gold left, so P@k and MAP skip it
    assert s["n_docs_with_gold"] == 1 and s["n_labels"] == 3
    assert s["map"] == pytest.approx(0.5)
    assert s["p_at_1"] == pytest.approx(1.0)
    # TP d1A, FP d0B, FN d1D
    assert s["micro_f1"] == pytest.approx(0.5)


def test_evaluate_multiclass_unseen_gold_is_wrong() -> None:
    # predictions a b a b; gold a b z a. Correct: d0, d1 -> 1/2
    # a: TP1, 2 gold, 2 pred -> 1/2; b: TP1, 1 gold, 2 pred -> 2/3; z: 0 -> (7/6) / 3
    out = evaluate_multiclass(
        ["a", "b", "z", "a"],
        np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.2, 0.8]]),
        ["a", "b"],
    )
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(7 / 18)
    assert (out["n_docs"], out["n_classes"], out["n_unseen_gold"]) == (4, 3, 1)
    assert "| accuracy | 0.500 |" in format_metrics_table(out)


def test_format_metrics_table(result: dict) -> None:
    table = format_metrics_table(result)
    assert table.splitlines()[0] == "| metric | all gold | train-seen |"
    assert "| MAP | 0.833 | 1.000 |" in table
    assert "| micro-F1 | 0.800 | 0.889 |" in table
    assert "| P@2 | 0.667 |" in table
    with pytest.raises(ValueError):
        format_metrics_table({})


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_multilabel(GOLD, SCORES[:, :2], CODES, Thresholds("global", 0.5), TRAIN_FREQ)


def test_unseen_gold_map_and_recall_rank_unseen_gold_against_wrong_codes_only() -> None:
    codes = ["A00", "B00", "C00"]  # B00: in the label space (a catalog code) but in no train note
    gold = [["A00", "B00"], ["A00"], ["D00"]]  # D00: unseen and outside the model's columns
    scores = np.array([[0.9, 0.5, 0.7], [0.8, 0.1, 0.1], [0.2, 0.3, 0.4]])
    out = evaluate_multilabel(gold, scores, codes, Thresholds("global", 0.5), {"A00": 2, "C00": 1})
    unseen = out["all_gold"]["unseen_gold"]
    # note 1: A00 (seen gold) leaves the ranking, C00 (wrong) 0.7 > B00 0.5: AP 1/2; note 3: D00 a miss, AP 0;
    # note 2 has no unseen gold and drops out
    assert unseen["n_docs"] == 2 and unseen["n_gold"] == 2
    assert unseen["map"] == pytest.approx(0.25) and unseen["recall_at_10"] == pytest.approx(0.5)
