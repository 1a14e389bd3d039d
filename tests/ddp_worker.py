"""Trains the loop-test task under a launcher; run by ``test_distributed.py``::

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR

Each rank writes OUT_DIR/rank{r}.safetensors (final weights) and OUT_DIR/rank{r}.json
(the example indices its batches held in each epoch, and the loop's history).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch.distributed as dist
from loop_worker import ShufflePlan, TinyTask, bce_loss, build_model, micro_f1, worker_config
from safetensors.torch import save_file

from medcoder.engine.distributed import init_from_env
from medcoder.engine.loop import train_loop


def main(out_dir: str) -> None:
    world = init_from_env()
    out = Path(out_dir)
    config = worker_config().model_copy(
        update={"epochs": 24, "checkpoint_every_steps": 0, "early_stopping_patience": 24, "grad_accum": 2}
    )
    train, dev = TinyTask(200, seed=0), TinyTask(100, seed=1)
    model = build_model(seed=world.rank)  # different starts on purpose: DDP must broadcast rank 0's weights
    seen: dict[int, list[int]] = defaultdict(list)

    def make_batch(indices: list[int], epoch: int, step: int):
        seen[epoch].extend(indices)
        return train.make_batch(indices, epoch, step)

    result = train_loop(
        model,
        ShufflePlan(len(train), config.batch_size, seed=0),
        make_batch,
        bce_loss,
        config,
        evaluate=lambda m: {"micro_f1": micro_f1(m, dev)},
        checkpoint_dir=out / "checkpoints",
        seed=0,
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{world.rank}.safetensors"))
    record = {"rank": world.rank, "world": world.size, "seen": seen, "history": result.history}
    (out / f"rank{world.rank}.json").write_text(json.dumps(record), encoding="utf-8")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
