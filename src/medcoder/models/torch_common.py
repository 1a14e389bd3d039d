"""What every torch coder (word-level and transformer) shares: loss, dev metrics, output-bias priors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medcoder.config import TrainConfig
from medcoder.errors import ConfigError
from medcoder.evaluation.metrics import mean_average_precision, micro_prf
from medcoder.evaluation.thresholds import tune_global_threshold


def stopping_config(train: TrainConfig, *, single_label: bool, task: str) -> TrainConfig:
    """``train`` with its early-stopping metric resolved (None -> map / accuracy) and checked against the task."""
    metric = train.early_stopping_metric or ("accuracy" if single_label else "map")
    allowed = ("accuracy", "loss") if single_label else ("map", "micro_f1", "loss")
    if metric not in allowed:
        raise ConfigError(
            f"train.early_stopping_metric {metric!r} does not apply to a {task} task (use one of {', '.join(allowed)})"
        )
    return train.model_copy(update={"early_stopping_metric": metric})


def coder_loss(logits: torch.Tensor, labels: torch.Tensor, *, single_label: bool) -> torch.Tensor:
    """Cross-entropy on the argmax label (single-label) or mean binary cross-entropy; logits ``[batch, labels]``."""
    logits = logits.float()
    if single_label:
        return torch.nn.functional.cross_entropy(logits, labels.argmax(dim=1))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


def dev_metrics(scores: np.ndarray, y: np.ndarray, *, single_label: bool) -> dict[str, float]:
    """Early-stopping metrics of probabilities ``scores`` against bool ``y`` ``[n_docs, n_labels]``."""
    if single_label:
        return {"accuracy": float((scores.argmax(axis=1) == y.argmax(axis=1)).mean())}
    eps = 1e-7
    clipped = np.clip(scores, eps, 1 - eps)
    loss = float(-(y * np.log(clipped) + (~y) * np.log(1 - clipped)).mean())
    threshold = tune_global_threshold(y, scores)
    return {"map": mean_average_precision(y, scores), "micro_f1": micro_prf(y, scores >= threshold)[2], "loss": loss}


def member_record(member: int, seed: int, result: Any) -> dict[str, Any]:
    """What a model's training report says of one trained network (a ``LoopResult``)."""
    return {
        "member": member,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "best_dev": result.best_score,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from,
        "history": result.history,
    }


def set_prior_bias(bias: torch.Tensor, y: np.ndarray) -> None:
    """Start every label's output bias at the logit of its (smoothed) train frequency.

    With thousands of rare labels a zero bias spends the first epochs learning
    that almost every label is off; starting from the priors lets the few
    steps a small dataset gives go to label-specific evidence.
    """
    prior = (y.sum(axis=0) + 0.5) / (len(y) + 1.0)
    with torch.no_grad():
        bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=bias.dtype))
