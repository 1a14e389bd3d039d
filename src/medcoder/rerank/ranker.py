"""The learned ranker: LightGBM (lambdarank, or a binary classifier) over candidate features.

Trained on the out-of-fold train candidates, stopped early on dev MAP computed
exactly as METRICS.md defines it (a note's gold codes no candidate holds add 0
to its AP but count in its gold total). Deterministic for a seed (LightGBM's
``deterministic`` mode, row-wise histograms, fixed bagging seed). Saved as
LightGBM's own text format, never a pickle.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medcoder.config.rerank import RankerConfig
from medcoder.errors import BundleError, MedcoderError
from medcoder.rerank.features import Candidates

logger = logging.getLogger(__name__)


def sparse_map(note: np.ndarray, scores: np.ndarray, y: np.ndarray, n_gold: np.ndarray) -> float:
    """MAP of candidate rows: per note, rank its rows by score; AP over the note's full gold count."""
    if len(note) == 0:
        return 0.0 if (np.asarray(n_gold) > 0).any() else float("nan")
    total, counted = 0.0, 0
    order = np.lexsort((-scores, note))  # by note, then best score first
    note, y = note[order], y[order]
    bounds = np.flatnonzero(np.diff(note)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(note)]])
    seen = set()
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        i = int(note[a]) if b > a else -1
        seen.add(i)
        if n_gold[i] == 0:
            continue
        hits = y[a:b]
        precision = np.cumsum(hits) / np.arange(1, b - a + 1)
        total += float(precision[hits].sum() / n_gold[i])
        counted += 1
    counted += int(sum(1 for i in range(len(n_gold)) if n_gold[i] > 0 and i not in seen))  # no candidate: AP 0
    return total / counted if counted else float("nan")


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as error:  # pragma: no cover - a dependency
        raise MedcoderError(f"the reranker needs LightGBM ({error}); pip install lightgbm") from error
    return lightgbm


class Ranker:
    """A trained LightGBM booster and the feature names it expects."""

    def __init__(self, booster: Any, names: list[str], *, best_iteration: int, objective: str) -> None:
        self.booster = booster
        self.names = names
        self.best_iteration = best_iteration
        self.objective = objective

    @classmethod
    def fit(
        cls, train: Candidates, dev: Candidates, config: RankerConfig, *, seed: int, unseen_gain: float = 1.0
    ) -> tuple[Ranker, dict]:
        """Train on ``train`` rows, keep the round with the best dev MAP; returns the ranker and its record.

        ``unseen_gain``: how much a gold code the note's models never saw counts against one they
        saw (lambdarank: its relevance gain; binary: its weight). Above 1 it lifts codes only
        retrieval can find, at some cost in MAP.
        """
        lgb = _lightgbm()
        if train.y is None or dev.y is None or dev.n_gold is None:
            raise MedcoderError("the ranker trains on candidates with gold labels")
        if not train.y.any():
            raise MedcoderError("no training candidate is a gold code: raise 'candidates' or check the labels")
        params = {
            "objective": config.objective,
            "learning_rate": config.learning_rate,
            "num_leaves": config.num_leaves,
            "min_child_samples": config.min_child_samples,
            "feature_fraction": config.feature_fraction,
            "bagging_fraction": config.bagging_fraction,
            "bagging_freq": 1 if config.bagging_fraction < 1 else 0,
            "lambda_l2": config.lambda_l2,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": config.threads,
            "verbosity": -1,
            "metric": "None",
        }
        grade = train.y.astype(np.int32)
        weight = None
        if config.objective == "lambdarank":
            params["lambdarank_truncation_level"] = 40
            if unseen_gain != 1.0 and train.unseen is not None:
                grade = grade + (train.y & train.unseen).astype(np.int32)  # 2: a gold code unseen in training
                params["label_gain"] = [0.0, 1.0, float(unseen_gain)]
        elif unseen_gain != 1.0 and train.unseen is not None:
            weight = np.where(train.y & train.unseen, unseen_gain, 1.0)
        data = lgb.Dataset(
            train.x,
            label=grade,
            weight=weight,
            group=train.group_sizes() if config.objective == "lambdarank" else None,
            feature_name=[n.replace(".", "__") for n in train.names],
            free_raw_data=False,
        )
        dev_data = lgb.Dataset(
            dev.x,
            label=dev.y.astype(np.int32) + ("label_gain" in params) * (dev.y & dev.unseen).astype(np.int32),
            group=dev.group_sizes() if config.objective == "lambdarank" else None,
            reference=data,
            free_raw_data=False,
        )
        history: list[float] = []
        best = {"map": -1.0, "iteration": 0}

        def dev_map(preds: np.ndarray, _data: Any) -> tuple[str, float, bool]:
            value = sparse_map(dev.note, np.asarray(preds), dev.y, dev.n_gold)
            history.append(value)
            if value > best["map"] + 1e-9:
                best.update(map=value, iteration=len(history))
            return "dev_map", value, True

        booster = lgb.train(
            params,
            data,
            num_boost_round=config.n_estimators,
            valid_sets=[dev_data],
            valid_names=["dev"],
            feval=dev_map,
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        iteration = best["iteration"] or booster.current_iteration()
        record = {
            "best_iteration": iteration,
            "dev_map": best["map"],
            "rounds": len(history),
            "dev_map_every_10": [round(v, 4) for v in history[::10]],
            "train_rows": int(len(train.y)),
            "train_positive_rows": int(train.y.sum()),
            "unseen_gain": unseen_gain,
        }
        return cls(booster, list(train.names), best_iteration=iteration, objective=config.objective), record

    def score(self, candidates: Candidates) -> np.ndarray:
        """Raw ranking scores of the rows (higher = more likely a gold code)."""
        if candidates.names != self.names:
            raise MedcoderError("the candidates' features differ from the ones the ranker was trained on")
        if len(candidates.codes) == 0:
            return np.zeros(0, dtype=np.float64)
        raw = self.booster.predict(candidates.x, num_iteration=self.best_iteration, raw_score=True)
        return np.asarray(raw, dtype=np.float64)

    def importance(self) -> dict[str, float]:
        """Total gain of each feature's splits, as a share of all gain."""
        gain = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        total = float(gain.sum()) or 1.0
        return {name: round(float(g) / total, 4) for name, g in zip(self.names, gain, strict=True)}

    def to_text(self) -> str:
        return str(self.booster.model_to_string(num_iteration=self.best_iteration))

    @classmethod
    def from_text(cls, text: str, names: list[str], *, objective: str, source: str) -> Ranker:
        lgb = _lightgbm()
        try:
            booster = lgb.Booster(model_str=text)
        except Exception as error:  # LightGBM raises its own error type for a bad file
            raise BundleError(f"{source}: not a LightGBM model ({error})") from None
        if booster.num_feature() != len(names):
            raise BundleError(
                f"{source}: the model uses {booster.num_feature()} features, config.json lists {len(names)}"
            )
        return cls(booster, names, best_iteration=booster.current_iteration(), objective=objective)
