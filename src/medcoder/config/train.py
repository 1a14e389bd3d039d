"""The training-loop config shared by every torch model, stage-1 masked-LM training and the bi-encoder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medcoder.config.base import Strict


class TrainConfig(Strict):
    """The one training loop shared by every torch model."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(5.0, gt=0.0)
    # auto: bf16 where the hardware has it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32; fp16: CUDA only
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # None: "map" for multi-label tasks, "accuracy" for single-label ones
    early_stopping_metric: Literal["map", "micro_f1", "loss", "accuracy"] | None = None
    early_stopping_patience: int = Field(5, ge=1)
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: a checkpoint at the end of every epoch only
    length_bucketing: bool = True
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: all cores
