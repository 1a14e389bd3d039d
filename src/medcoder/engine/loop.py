"""One training loop for every torch model.

The loop knows no datasets and no file layout. A ``BatchPlan`` says which
examples form each batch of each epoch, ``make_batch`` turns indices into
tensors and ``loss_fn`` turns a batch into a scalar loss. Around that the loop
does optimisation (AdamW/Adam, warmup + constant/linear/cosine LR, gradient
accumulation, clipping, bf16/fp16 autocast), early stopping on a dev metric
with the best weights restored at the end, and checkpoints that resume to the
bit: a run interrupted at any point (even ``kill -9``) and resumed ends with
weights ``torch.equal`` to an uninterrupted run with the same seed.

Epoch numbers in results and logs count from 1; ``plan.batches`` and
``make_batch`` get the 0-based epoch index. Under a launcher (torchrun) each
rank trains on its share of every epoch's batches through PyTorch DDP
(``distributed.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from medcoder.config import TrainConfig
from medcoder.engine.checkpoint import (
    LAST,
    capture_rng,
    cpu_copy,
    find_checkpoint,
    fingerprint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from medcoder.engine.distributed import current_world, wrap_for_training
from medcoder.engine.precision import autocast_factory, resolve_precision
from medcoder.errors import MedcoderError
from medcoder.progress import Update

logger = logging.getLogger(__name__)

MakeBatch = Callable[[list[int], int, int], dict[str, torch.Tensor]]
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
Evaluate = Callable[[torch.nn.Module], dict[str, float]]

# Settings that do not change what a run computes, so a resume may change them.
_RESUMABLE_SETTINGS = {"checkpoint_every_steps", "num_threads"}


class BatchPlan(Protocol):
    def batches(self, epoch: int) -> list[list[int]]:
        """Example indices of each batch of ``epoch`` (0-based); the same for the same seed and epoch."""


@dataclass
class LoopResult:
    """What a run did. ``best_score`` is None when nothing was monitored (the last epoch is best)."""

    best_epoch: int
    best_score: float | None
    epochs_run: int
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, dev_<metric>..., lr, batches, docs, seconds, ...
    stopped_early: bool
    resumed_from: int | None  # the optimizer step the run resumed from; None: a fresh start


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Optimizer steps of linear warmup: ``ceil(warmup_ratio * total_steps)``."""
    return math.ceil(warmup_ratio * total_steps)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LR used by optimizer step ``step`` (0-based) of ``total``.

    Warmup: ``(step + 1) / warmup`` for ``step < warmup``, so the first step
    already moves and the last warmup step uses the full LR. Then ``constant``:
    1; ``linear``: ``(total - step) / (total - warmup)``; ``cosine``:
    ``0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown LR schedule {schedule!r}")


@dataclass
class _LoopState:
    """Where a run stands; saved as JSON in every checkpoint."""

    epoch: int = 0  # 0-based epoch in progress, or next to run
    step_in_epoch: int = 0  # micro-batches of that epoch already used (always a whole accumulation)
    global_step: int = 0  # optimizer steps done
    best_score: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the monitored score last improved
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0  # example-weighted train loss so far in the epoch
    epoch_docs: int = 0
    epoch_seconds: float = 0.0
    lr: float = 0.0  # first param group's LR at the last step
    scaler: dict[str, Any] | None = None  # GradScaler state (fp16 only)


def _default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Biases and norm weights (1-d) are not decayed.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _make_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    if not any(g["params"] for g in groups):
        raise MedcoderError("the model has no trainable parameters (all have requires_grad=False)")
    # Adam applies weight_decay as an L2 term in the gradient; AdamW decouples it.
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    params = [p for g in groups for p in g["params"]]
    # The fused kernel updates a tensor in one pass; the default on CPU is a Python loop over the
    # parameters with ~6 full passes each. For MiniLM + a label-attention head: 0.108 -> 0.013 s a
    # step (bench/optimizer_step.py), a few % of a 512-token step, more when memory bandwidth is
    # shared with other work. Same update rule.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return kind(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _describe_run(
    model: torch.nn.Module,
    param_groups: list[dict[str, Any]] | None,
    config: TrainConfig,
    seed: int,
    batches: list[list[int]],
) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this run (JSON types only)."""
    shapes = [(name, list(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    groups: Any = "default"
    if param_groups is not None:
        groups = [
            {"size": len(g["params"]), **{k: _json_value(v) for k, v in g.items() if k != "params"}}
            for g in param_groups
        ]
    return {
        "config": config.model_dump(mode="json", exclude=_RESUMABLE_SETTINGS),
        "seed": seed,
        "examples": len({i for batch in batches for i in batch}),
        "batches_per_epoch": len(batches),
        "model": fingerprint({"state_dict": shapes}),
        "param_groups": groups,
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value if isinstance(value, int | float | str | bool | None) else repr(value)


class _Training:
    """The mutable parts of one run and the operations on them."""

    def __init__(
        self, model: torch.nn.Module, config: TrainConfig, groups: list[dict[str, Any]], total_steps: int
    ) -> None:
        self.model = model
        self.world = current_world()
        self.forward_model = wrap_for_training(model, self.world)  # what the steps call (DDP with several ranks)
        self.config = config
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps(total_steps, config.warmup_ratio)
        self.optimizer = _make_optimizer(groups, config)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.device = self.params[0].device
        self.autocast = autocast_factory(config.precision, self.device)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = (
            torch.amp.GradScaler("cuda") if resolve_precision(config.precision, self.device) == "fp16" else None
        )
        self.state = _LoopState()
        self.best: dict[str, torch.Tensor] | None = None  # None: the current weights are the best

    def schedule_state(self) -> dict[str, Any]:
        return {
            "kind": self.config.schedule,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "base_lrs": self.base_lrs,
        }

    def optimizer_step(self) -> None:
        """One update from the accumulated gradients; the LR follows the schedule."""
        factor = lr_factor(self.state.global_step, self.total_steps, self.warmup_steps, self.config.schedule)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.state.lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def score(self, train_loss: float, dev: dict[str, float], evaluated: bool) -> float | None:
        """The monitored score of an epoch (None: nothing monitored); names a missing metric."""
        metric = self.config.early_stopping_metric
        if evaluated:
            if metric not in dev:
                raise MedcoderError(
                    f"early_stopping_metric {metric!r} is not among the dev metrics ({', '.join(sorted(dev))})"
                )
            return dev[metric]
        return train_loss if metric == "loss" else None

    def update_best(self, score: float | None, epoch_number: int) -> None:
        state = self.state
        if score is None:
            state.best_epoch = epoch_number
            return
        lower_is_better = self.config.early_stopping_metric == "loss"
        if math.isnan(score):
            improved = False
        elif state.best_score is None:
            improved = True
        else:
            improved = score < state.best_score if lower_is_better else score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch_number, 0
            self.best = cpu_copy(self.model.state_dict())
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= self.config.early_stopping_patience

    def save(self, path: Path, run: dict[str, Any]) -> None:
        if not self.world.is_main:  # one writer; every rank resumes from the same file
            return
        if self.scaler is not None:
            self.state.scaler = self.scaler.state_dict()
        save_checkpoint(
            path,
            run=run,
            model=self.model.state_dict(),
            best=self.best,
            optimizer=self.optimizer.state_dict(),
            schedule=self.schedule_state(),
            loop=asdict(self.state),
            rng=capture_rng(),
        )

    def restore(self, path: Path, run: dict[str, Any]) -> None:
        checkpoint = load_checkpoint(path, run)
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.base_lrs = list(checkpoint.schedule["base_lrs"])
        self.state = _LoopState(**checkpoint.loop)
        self.best = checkpoint.best
        if self.scaler is not None and self.state.scaler is not None:
            self.scaler.load_state_dict(self.state.scaler)
        restore_rng(checkpoint.rng)


def train_loop(
    model: torch.nn.Module,
    plan: BatchPlan,
    make_batch: MakeBatch,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    evaluate: Evaluate | None = None,
    checkpoint_dir: Path | None = None,
    seed: int = 0,
    progress: Update | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    evaluate_before: bool = False,
) -> LoopResult:
    """Train ``model`` in place; at the end it holds the best epoch's weights.

    ``make_batch(indices, epoch, step_in_epoch)`` must be deterministic in its
    arguments and ``loss_fn(model, batch)`` returns a scalar mean loss.
    ``evaluate(model)`` (run under ``no_grad`` in eval mode after each epoch)
    returns dev metrics; ``config.early_stopping_metric`` names one (higher is
    better, except ``loss``: lower; without ``evaluate``, ``loss`` is the mean
    train loss and any other metric makes the last epoch the best).
    With ``checkpoint_dir``, ``checkpoint_dir/last`` is written after every
    ``checkpoint_every_steps`` optimizer steps and every epoch, and an existing
    one is resumed from (``MedcoderError`` if it belongs to another run); one
    run at a time per folder. The model's initial weights are the caller's: seed
    before building it. ``param_groups`` replaces the default groups (all
    trainable parameters, no weight decay on 1-d ones); a group without
    ``lr``/``weight_decay`` gets the config's. ``evaluate_before`` scores the
    starting weights too (history epoch 0): they stay the result unless an
    epoch beats them, for fine-tuning that may not help.
    """
    world = current_world()
    first_batches = world.shard(plan.batches(0))
    if not first_batches:
        raise MedcoderError("the batch plan has no batches: no training examples")
    groups = _default_param_groups(model, config.weight_decay)
    if param_groups is not None:
        groups = param_groups = [{**g, "params": list(g["params"])} for g in param_groups]
    total = config.epochs * math.ceil(len(first_batches) / config.grad_accum)
    training = _Training(model, config, groups, total)
    run = _describe_run(model, param_groups, config, seed, first_batches)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / LAST
    found = None if checkpoint_dir is None else find_checkpoint(Path(checkpoint_dir))
    resumed_from = None
    if found is not None:
        training.restore(found, run)
        resumed_from = training.state.global_step
        logger.info("resuming from %s at optimizer step %d of %d", found, resumed_from, total)
    else:
        seed_everything(seed)
        if evaluate_before and evaluate is not None:
            _evaluate_start(training, evaluate)

    threads = torch.get_num_threads()
    was_training = model.training
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        model.train()
        state = training.state
        while state.epoch < config.epochs and not state.stopped_early:
            batches = first_batches if state.epoch == 0 else world.shard(plan.batches(state.epoch))
            _run_epoch(training, batches, make_batch, loss_fn, evaluate, progress, path, run)
        if training.best is not None:
            model.load_state_dict(training.best)
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    state = training.state
    return LoopResult(
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        epochs_run=sum(entry["epoch"] > 0 for entry in state.history),
        history=state.history,
        stopped_early=state.stopped_early,
        resumed_from=resumed_from,
    )


def _evaluated(model: torch.nn.Module, evaluate: Evaluate) -> dict[str, float]:
    """``evaluate(model)`` in eval mode without gradients; the model is back in train mode after."""
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in evaluate(model).items()}
    finally:
        model.train()


def _evaluate_start(training: _Training, evaluate: Evaluate) -> None:
    """Score the weights before training as "epoch 0", a candidate for the best weights."""
    dev = _evaluated(training.model, evaluate)
    score = training.score(math.nan, dev, True)
    training.update_best(score, 0)
    training.state.history.append({"epoch": 0, **{f"dev_{k}": v for k, v in dev.items()}})
    logger.info("before training: dev %s %.4f", training.config.early_stopping_metric, score)


def _run_epoch(
    training: _Training,
    batches: list[list[int]],
    make_batch: MakeBatch,
    loss_fn: LossFn,
    evaluate: Evaluate | None,
    progress: Update | None,
    path: Path | None,
    run: dict[str, Any],
) -> None:
    """Train the rest of ``training.state.epoch`` (from ``step_in_epoch``), evaluate, checkpoint."""
    model, config, state = training.model, training.config, training.state
    epoch = state.epoch
    started = time.perf_counter() - state.epoch_seconds
    # Summed on the device so the loop does not wait for each loss (MPS has no float64).
    sum_dtype = torch.float32 if training.device.type == "mps" else torch.float64
    loss_sum = torch.tensor(state.epoch_loss_sum, dtype=sum_dtype, device=training.device)
    every = config.checkpoint_every_steps
    for first in range(state.step_in_epoch, len(batches), config.grad_accum):
        group = batches[first : first + config.grad_accum]
        for offset, indices in enumerate(group):
            batch = _to_device(make_batch(indices, epoch, first + offset), training.device)
            # Under DDP only the group's last backward all-reduces; the others accumulate locally.
            no_sync = getattr(training.forward_model, "no_sync", None)
            sync = no_sync() if no_sync is not None and offset < len(group) - 1 else contextlib.nullcontext()
            with sync:
                with training.autocast():
                    loss = loss_fn(training.forward_model, batch)
                loss_sum += loss.detach().to(sum_dtype) * len(indices)
                # Divide by the group's real size so a trailing partial group is a mean too.
                scaled = loss / len(group)
                (training.scaler.scale(scaled) if training.scaler is not None else scaled).backward()
            state.epoch_docs += len(indices)
        training.optimizer_step()
        state.step_in_epoch = first + len(group)
        last_in_epoch = state.step_in_epoch >= len(batches)
        if path is not None and every > 0 and state.global_step % every == 0 and not last_in_epoch:
            state.epoch_loss_sum = loss_sum.item()
            state.epoch_seconds = time.perf_counter() - started
            training.save(path, run)
        if progress is not None:
            progress(state.global_step, training.total_steps)

    seconds = time.perf_counter() - started
    train_loss = loss_sum.item() / max(state.epoch_docs, 1)
    eval_started = time.perf_counter()
    dev = _evaluated(model, evaluate) if evaluate is not None else {}
    eval_seconds = time.perf_counter() - eval_started
    training.update_best(training.score(train_loss, dev, evaluate is not None), epoch + 1)
    state.history.append(
        {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{f"dev_{k}": v for k, v in dev.items()},
            "lr": state.lr,
            "batches": len(batches),  # this rank's micro-batches (its share of the plan under DDP)
            "docs": state.epoch_docs,  # the examples in them
            "seconds": seconds,
            "eval_seconds": eval_seconds,
            "docs_per_s": state.epoch_docs / seconds if seconds > 0 else 0.0,
        }
    )
    if training.world.is_main:
        _log_epoch(training, evaluate is not None)
    state.epoch, state.step_in_epoch = epoch + 1, 0
    state.epoch_loss_sum, state.epoch_docs, state.epoch_seconds = 0.0, 0, 0.0
    if path is not None:
        training.save(path, run)


def _log_epoch(training: _Training, evaluated: bool) -> None:
    state, config = training.state, training.config
    entry = state.history[-1]
    metric = config.early_stopping_metric
    monitored = ""
    if evaluated:
        best = "-" if state.best_score is None else f"{state.best_score:.4f}"
        monitored = f", dev {metric} {entry[f'dev_{metric}']:.4f} (best {best} at epoch {state.best_epoch})"
    logger.info(
        "epoch %d/%d: train loss %.4f%s, %.1fs, %.0f docs/s%s",
        entry["epoch"],
        config.epochs,
        entry["train_loss"],
        monitored,
        entry["seconds"],
        entry["docs_per_s"],
        ", stopping early" if state.stopped_early else "",
    )
