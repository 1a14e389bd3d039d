"""A tiny multilabel task for the training-loop tests, and a script that trains it.

Imported by ``test_loop.py`` for the task; run as a script by the kill test::

    python tests/loop_worker.py CHECKPOINT_DIR WEIGHTS_OUT RESULT_JSON

trains ``worker_config()`` with checkpoints in CHECKPOINT_DIR (resuming one
that is there), then writes the final weights (safetensors) and the
LoopResult (JSON). ``LOOP_WORKER_SLEEP`` (seconds) slows every batch so a
test can kill the process mid-run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from medcoder.config import TrainConfig
from medcoder.engine.loop import train_loop

VOCAB = 40
LABELS = 5
LENGTH = 12


class TinyTask:
    """Token bags where label ``j`` is present exactly when token ``j`` is; the rest is noise.

    ``tokens`` is ``[n, LENGTH]`` (long), ``targets`` ``[n, LABELS]`` (float 0/1).
    """

    def __init__(self, n: int = 200, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = (torch.rand(n, LABELS, generator=g) < 0.4).float()
        self.tokens = torch.randint(LABELS, VOCAB, (n, LENGTH), generator=g)
        label_ids = torch.arange(LABELS).expand(n, LABELS)
        self.tokens[:, :LABELS] = torch.where(self.targets.bool(), label_ids, self.tokens[:, :LABELS])
        self.sleep = float(os.environ.get("LOOP_WORKER_SLEEP", "0"))

    def __len__(self) -> int:
        return len(self.targets)

    def make_batch(self, indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
        if self.sleep:
            time.sleep(self.sleep)
        index = torch.tensor(indices)
        return {"tokens": self.tokens[index], "targets": self.targets[index]}


class ShufflePlan:
    """A fresh permutation per epoch, cut into batches; a function of (seed, epoch) only."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()
        return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class BagClassifier(torch.nn.Module):
    """Mean of token embeddings -> dropout -> linear: ``[batch, LENGTH]`` -> logits ``[batch, LABELS]``."""

    def __init__(self, dim: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, dim)
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(dim, LABELS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.embed(tokens).mean(dim=1)))


def bce_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(batch["tokens"]).float()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"])


def micro_f1(model: torch.nn.Module, task: TinyTask) -> float:
    predicted = model(task.tokens) > 0
    gold = task.targets.bool()
    tp = (predicted & gold).sum().item()
    return 2 * tp / max(predicted.sum().item() + gold.sum().item(), 1)


def build_model(seed: int = 0, dropout: float = 0.0) -> BagClassifier:
    torch.manual_seed(seed)
    return BagClassifier(dropout=dropout)


def worker_config() -> TrainConfig:
    return TrainConfig(
        epochs=3,
        batch_size=16,
        lr=0.05,
        precision="fp32",
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        early_stopping_metric="micro_f1",
        checkpoint_every_steps=2,
        num_threads=1,
    )


def main(checkpoint_dir: str, weights_out: str, result_out: str) -> None:
    config = worker_config()
    train, dev = TinyTask(200, seed=0), TinyTask(100, seed=1)
    model = build_model(dropout=0.2)
    result = train_loop(
        model,
        ShufflePlan(len(train), config.batch_size, seed=0),
        train.make_batch,
        bce_loss,
        config,
        evaluate=lambda m: {"micro_f1": micro_f1(m, dev)},
        checkpoint_dir=Path(checkpoint_dir),
        seed=0,
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights_out)
    Path(result_out).write_text(json.dumps(asdict(result)), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
