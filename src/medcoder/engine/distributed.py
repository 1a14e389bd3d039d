"""Data-parallel training with PyTorch's own DistributedDataParallel (DDP).

``torchrun --standalone --nproc_per_node N $(which medcoder) train ...`` (or
``accelerate launch --multi_gpu --num_processes N ...``, torchrun inside; its
``--cpu`` starts one process) starts N processes with RANK/WORLD_SIZE/MASTER_ADDR
in their environment; :func:`init_from_env` joins them into one process group (NCCL
on CUDA, gloo on CPU). The training loop then gives each rank every N-th
batch of the epoch's plan and lets DDP average the gradients; every rank
scores dev itself (same weights, same decision, no messages needed) and only
rank 0 writes checkpoints and bundles.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the process group (rank 0 of 1 without one)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: list[list[int]]) -> list[list[int]]:
        """This rank's batches: every ``size``-th, after cutting the list to a multiple of ``size``.

        Equal counts keep the ranks' gradient all-reduces in step; the few
        batches cut from the end differ from epoch to epoch with the plan's shuffle.
        """
        if self.size == 1:
            return batches
        if len(batches) < self.size:  # fewer batches than ranks: each rank repeats one
            batches = (batches * self.size)[: self.size]
        usable = len(batches) // self.size * self.size
        return batches[self.rank : usable : self.size]


def current_world() -> World:
    """The process group this process belongs to, if any."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_from_env() -> World:
    """Join the process group a launcher (torchrun, accelerate) describes in the environment; no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        return current_world()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    world = current_world()
    logger.info("distributed training: rank %d of %d (%s)", world.rank, world.size, backend)
    return world


def wrap_for_training(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """The module the training steps call: ``model`` itself, or a DDP wrapper when there are several ranks."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
