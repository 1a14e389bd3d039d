"""Mixed precision: which autocast a training or inference step runs under.

``auto`` (the default) uses bf16 only where the hardware computes it natively
(CUDA devices that support it; CPUs with AVX512-BF16 or AMX). Elsewhere bf16
is emulated and slow: measured on this project's 2-core AVX2 machines, a
TextCNN at 2,500 tokens trains at 38.6 docs/s in fp32 but 4.8 docs/s under bf16
autocast (bench/textcnn_speed.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medcoder.errors import MedcoderError


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume no native bf16, fp32 is the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision (``fp32``/``bf16``/``fp16``) for ``precision`` on ``device``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_has_native_bf16() else "fp32"


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A function returning a fresh autocast context for each step."""
    precision = resolve_precision(precision, device)
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise MedcoderError(f"precision fp16 needs a CUDA device, the model is on {device.type}: use bf16 or fp32")
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext
