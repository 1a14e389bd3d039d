"""DDP: two CPU processes (gloo) started by torchrun train one model through the same loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from medcoder.engine.distributed import World

TESTS = Path(__file__).parent


def test_world_shards_batches_evenly() -> None:
    batches = [[i] for i in range(7)]
    shards = [World(r, 3).shard(batches) for r in range(3)]
    assert shards == [[[0], [3]], [[1], [4]], [[2], [5]]]  # equal counts; the 7th batch is left out
    assert World().shard(batches) == batches
    assert [World(r, 4).shard([[0], [1]]) for r in range(4)] == [[[0]], [[1]], [[0]], [[1]]]


def test_two_cpu_processes_train_one_model_with_ddp(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(TESTS / "ddp_worker.py"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    # Each rank trained on its own half of every epoch's batches.
    for epoch in ("0", "1", "2", "3"):
        first, second = (set(r["seen"][epoch]) for r in records)
        assert not first & second and len(first) == len(second) == 96  # 13 batches of 16 -> 6 per rank
    # DDP broadcast rank 0's start and averaged the gradients: both ranks end with the same weights...
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    # ...that learned the task (dev micro-F1 far above chance), and only rank 0 wrote a checkpoint.
    history = records[0]["history"]
    assert history[-1]["dev_micro_f1"] > 0.8 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert (tmp_path / "checkpoints").is_dir()
