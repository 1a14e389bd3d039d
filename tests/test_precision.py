"""precision: auto picks bf16 only where it is native; explicit values pass through."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medcoder.engine import precision
from medcoder.errors import MedcoderError


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu(monkeypatch, native, expected) -> None:
    monkeypatch.setattr(precision, "_cpu_has_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", torch.device("cpu")) == expected


def test_explicit_precision_is_kept_and_fp16_needs_cuda() -> None:
    cpu = torch.device("cpu")
    assert precision.resolve_precision("bf16", cpu) == "bf16"
    assert precision.autocast_factory("fp32", cpu) is contextlib.nullcontext
    with precision.autocast_factory("bf16", cpu)():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(MedcoderError, match="fp16 needs a CUDA device"):
        precision.autocast_factory("fp16", cpu)
