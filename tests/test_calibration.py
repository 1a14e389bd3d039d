"""Calibration: ECE@k and its reliability table, the four calibrators, choosing one by cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcoder.errors import MedcoderError
from medcoder.evaluation.calibration import (
    CALIBRATION_METHODS,
    Calibrator,
    calibrate_probabilities,
    choose_calibrator,
    ece_at_k,
    logit,
    reliability,
    top_k_pairs,
)
from medcoder.evaluation.metrics import mean_average_precision, rank_order


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _miscalibrated(n: int, seed: int, temperature: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores x whose true probability is sigmoid(x / temperature): sigmoid(x) is overconfident."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-1.0, 4.0, n)
    return x, rng.random(n) < _sigmoid(x / temperature)


def test_reliability_of_a_hand_made_example() -> None:
    # bin 0: 0.05 (not gold); bin 1: 0.15 (gold), 0.18 (not); bin 9: 0.95 (gold)
    out = reliability(np.array([0.05, 0.15, 0.18, 0.95]), np.array([False, True, False, True]))
    # ECE = 1/4 |0 - 0.05| + 2/4 |0.5 - 0.165| + 1/4 |1 - 0.95| = 0.0125 + 0.1675 + 0.0125
    assert out["ece"] == pytest.approx(0.1925, abs=1e-12)
    assert out["n"] == 4 and len(out["bins"]) == 10
    first, second, last = out["bins"][0], out["bins"][1], out["bins"][9]
    assert (first["low"], first["high"], first["n"]) == (0.0, 0.1, 1)
    assert second["n"] == 2 and second["mean_probability"] == pytest.approx(0.165) and second["share_gold"] == 0.5
    assert (last["low"], last["high"], last["n"], last["share_gold"]) == (0.9, 1.0, 1, 1.0)
    assert out["bins"][5] == {"low": 0.5, "high": 0.6, "n": 0, "mean_probability": None, "share_gold": None}
    json.dumps(out, allow_nan=False)


def test_reliability_bin_edges_and_bad_input() -> None:
    # a bin holds its low edge; 1.0 goes in the last bin; 0.3 and 0.7 (whose * 10 rounds up) stay in bins 3 and 7
    out = reliability(np.array([0.0, 0.3, 0.7, 0.6, 1.0, 0.1]), np.array([True, False, True, False, True, False]))
    assert [b["n"] for b in out["bins"]] == [1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    assert reliability(np.array([0.2, 0.2]), np.array([True, False]))["ece"] == pytest.approx(0.3)
    assert reliability(np.zeros(0), np.zeros(0, dtype=bool))["ece"] is None
    assert [b["n"] for b in reliability(np.array([0.1, 0.6]), np.array([True, True]), bins=2)["bins"]] == [1, 1]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        reliability(np.array([1.5]), np.array([True]))
    with pytest.raises(ValueError, match="same length"):
        reliability(np.array([0.5, 0.5]), np.array([True]))


def test_top_k_pairs_takes_each_notes_top_ranked_codes() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [0.2, 0.1, 0.3, 0.0]])
    y = np.array([[True, False, False, True], [True, True, False, False]])
    probs, gold, notes = top_k_pairs(scores, y, k=2)
    # note 0: the two 0.9s, the tie broken by column (1 before 3); note 1: columns 2 then 0
    assert probs.tolist() == [0.9, 0.9, 0.3, 0.2]
    assert gold.tolist() == [False, True, False, True]
    assert notes.tolist() == [0, 0, 1, 1]
    assert top_k_pairs(scores, y, k=20)[0].size == 8  # fewer codes than k: all of them
    assert ece_at_k(scores, y, k=2) == reliability(probs, gold)
    # bin 9: two pairs at 0.9, one gold (|0.5 - 0.9|); bin 3: 0.3 not gold; bin 2: 0.2 gold
    assert ece_at_k(scores, y, k=2)["ece"] == pytest.approx((2 * 0.4 + 0.3 + 0.8) / 4)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_each_method_lowers_held_out_ece_on_miscalibrated_scores(method: str) -> None:
    x_fit, y_fit = _miscalibrated(4000, seed=1)
    x_new, y_new = _miscalibrated(4000, seed=2)
    before = reliability(_sigmoid(x_new), y_new)["ece"]
    calibrator = Calibrator.fit(x_fit, y_fit, method)
    probs = calibrator(x_new)
    assert probs.dtype == np.float32 and probs.shape == x_new.shape
    after = reliability(probs, y_new)["ece"]
    assert before > 0.1 and after < 0.03 and after < before / 4, (before, after)
    if method == "temperature":
        assert calibrator.params["temperature"] == pytest.approx(3.0, rel=0.1)
    if method == "platt":
        assert calibrator.params["a"] == pytest.approx(1 / 3, rel=0.1) and abs(calibrator.params["b"]) < 0.15


def _fitted() -> list[Calibrator]:
    x, y = _miscalibrated(3000, seed=3)
    return [Calibrator.fit(x, y, method) for method in CALIBRATION_METHODS]


def test_every_calibrator_is_strictly_increasing_and_keeps_rankings() -> None:
    calibrators = _fitted()
    isotonic = calibrators[-1]
    ys = isotonic.params["y_thresholds"]
    assert len(set(ys)) < len(ys)  # it has flat steps: points inside one must still be told apart
    grid = np.linspace(-12.0, 4.0, 1601)
    x = isotonic.params["x_thresholds"]
    # 50 points inside each flat step wider than 0.1
    flat = np.concatenate(
        [np.linspace(x[i], x[i + 1], 50) for i in range(len(ys) - 1) if ys[i] == ys[i + 1] and x[i + 1] - x[i] > 0.1]
    )
    rng = np.random.default_rng(0)
    probs = _sigmoid(rng.normal(-4.0, 3.0, (40, 300))).astype(np.float32)
    gold = rng.random((40, 300)) < probs
    for calibrator in calibrators:
        for points in (grid, np.sort(flat)):
            out = calibrator(points)
            assert np.all(np.diff(out) > 0), calibrator
            assert out.min() > 0 and out.max() < 1
        calibrated = calibrate_probabilities(calibrator, probs)
        assert calibrated.dtype == np.float32
        assert np.array_equal(rank_order(calibrated), rank_order(probs)), calibrator
        assert mean_average_precision(gold, calibrated) == mean_average_precision(gold, probs)
    # far outside what was fitted every map still orders (no clipping at the ends)
    far = np.array([-400.0, -200.0, -100.0, -60.0])
    for calibrator in calibrators:
        assert np.all(np.diff(calibrator._apply(far)) > 0), calibrator


def test_round_trip_through_json_gives_identical_probabilities() -> None:
    x = np.linspace(-20.0, 20.0, 999).reshape(27, 37)
    for calibrator in _fitted():
        data = json.loads(json.dumps(calibrator.to_dict(), allow_nan=False))
        assert set(data) == {"method", "params"} and data["method"] == calibrator.method
        again = Calibrator.from_dict(data, source="calibration.json")
        assert again.method == calibrator.method and again.params == calibrator.params
        assert np.array_equal(again(x), calibrator(x)) and again(x).shape == x.shape
        assert again(np.float64(0.5)).shape == () and again(x).dtype == np.float32
    assert Calibrator().method == "none" and Calibrator.from_dict({"method": "none"}).to_dict() == {
        "method": "none",
        "params": {},
    }


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"params": {}},
        {"method": "magic", "params": {}},
        {"method": "none", "params": {}, "extra": 1},
        {"method": "temperature", "params": {}},
        {"method": "temperature", "params": {"temperature": -1.0}},
        {"method": "temperature", "params": {"temperature": float("nan")}},
        {"method": "temperature", "params": {"temperature": True}},
        {"method": "platt", "params": {"a": "x", "b": 0.0}},
        {"method": "platt", "params": {"a": 0.0, "b": 0.0}},
        {"method": "platt", "params": [1, 2]},
        {"method": "isotonic", "params": {"x_thresholds": [1.0, 0.0], "y_thresholds": [0.0, 1.0]}},
        {"method": "isotonic", "params": {"x_thresholds": [0.0, 1.0], "y_thresholds": [0.5, 0.2]}},
        {"method": "isotonic", "params": {"x_thresholds": [0.0, 1.0], "y_thresholds": [0.5]}},
        {"method": "isotonic", "params": {"x_thresholds": [], "y_thresholds": []}},
        {"method": "isotonic", "params": {"x_thresholds": [0.0], "y_thresholds": [1.5]}},
    ],
)
def test_from_dict_refuses_garbage_naming_the_source(data: object) -> None:
    with pytest.raises(MedcoderError, match="^models/x/calibration.json: "):
        Calibrator.from_dict(data, source="models/x/calibration.json")


def test_choose_calibrator_picks_by_cross_validated_ece() -> None:
    x, y = _miscalibrated(3000, seed=4)
    groups = np.repeat(np.arange(150), 20)  # 150 "notes" of 20 pairs
    chosen, rows = choose_calibrator(x, y, groups, seed=0)
    assert [r["method"] for r in rows] == list(CALIBRATION_METHODS)
    by_method = {r["method"]: r for r in rows}
    assert chosen.method != "none"
    assert by_method[chosen.method]["cv_ece"] == min(r["cv_ece"] for r in rows)
    assert by_method[chosen.method]["cv_ece"] < by_method["none"]["cv_ece"] / 3
    assert all(r["cv_log_loss"] < by_method["none"]["cv_log_loss"] for r in rows if r["method"] != "none")
    assert choose_calibrator(x, y, groups, seed=0)[1] == rows  # deterministic for a seed

    # already calibrated scores: nothing beats "none" by much, and a temperature fit stays at 1
    rng = np.random.default_rng(5)
    x = rng.normal(-1.0, 2.0, 3000)
    y = rng.random(3000) < _sigmoid(x)
    chosen, rows = choose_calibrator(x, y, groups, seed=0)
    by_method = {r["method"]: r for r in rows}
    assert len(rows) == 4 and by_method[chosen.method]["cv_ece"] <= by_method["none"]["cv_ece"]
    assert Calibrator.fit(x, y, "temperature").params["temperature"] == pytest.approx(1.0, abs=0.08)
    assert np.abs(chosen(x) - _sigmoid(x)).max() < 0.1

    # a tie goes to the simpler method
    chosen, rows = choose_calibrator(x, y, groups, methods=("temperature", "none"))
    if rows[0]["cv_ece"] == rows[1]["cv_ece"]:
        assert chosen.method == "none"


def test_choose_calibrator_with_nothing_to_fit_returns_none() -> None:
    x = np.linspace(-3, 3, 40)
    chosen, rows = choose_calibrator(x, x > 0, np.zeros(40, dtype=int))
    assert chosen.method == "none" and rows[0]["cv_ece"] is None and "group" in rows[0]["note"]
    chosen, rows = choose_calibrator(x, np.zeros(40, dtype=bool), np.arange(40) // 4)
    assert chosen.method == "none" and "all not gold" in rows[0]["note"]
    with pytest.raises(MedcoderError, match="magic"):
        choose_calibrator(x, x > 0, np.arange(40) // 4, methods=("magic",))


def test_logit_clips_and_inverts_the_sigmoid() -> None:
    p = np.array([0.0, 1e-9, 0.25, 0.5, 0.9, 1.0])
    out = logit(p)
    assert np.all(np.isfinite(out)) and out[0] == out[1] == pytest.approx(np.log(1e-7 / (1 - 1e-7)))
    assert out[3] == 0.0 and _sigmoid(out[2]) == pytest.approx(0.25)
    assert Calibrator()(out[2:5]).tolist() == pytest.approx([0.25, 0.5, 0.9])
    # a model's own probabilities keep their order below 1e-7 (only 0 and 1 are moved)
    tiny = np.array([[1e-12, 1e-10, 1e-8, 0.5]], dtype=np.float32)
    for calibrator in _fitted()[1:]:
        assert np.all(np.diff(calibrate_probabilities(calibrator, tiny)[0]) > 0), calibrator
    assert np.array_equal(calibrate_probabilities(Calibrator(), tiny), tiny)  # "none": untouched
