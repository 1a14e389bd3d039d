"""Benchmark: one AdamW step over MiniLM-sized parameters on CPU, default (for-loop) vs foreach vs fused.

The parameters have MiniLM-L6's shapes (word embeddings 30,522 x 384, six layers)
plus a label-attention head for 1,767 codes (two 1,767 x 256 matrices); gradients
are random. medcoder's training loop uses the fused kernel wherever it can
(``training/loop.py``); this shows what that buys. Median of --repeats steps
after one warm-up step, each variant in turn.

    .venv/bin/python bench/optimizer_step.py [--threads 2] [--repeats 7]

Writes bench/results/optimizer_step.md and .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from medcoder.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def minilm_like_parameters() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(30522, 384), (512, 384), (2, 384), (384,), (384,)]
    for _ in range(6):  # one BERT layer: q, k, v, out, 2 layer norms, intermediate, output, layer norm
        shapes += (
            [(384, 384), (384,)] * 4 + [(384,), (384,)] + [(1536, 384), (1536,), (384, 1536), (384,), (384,), (384,)]
        )
    shapes += [(256, 384), (256,), (1767, 256), (1767, 256), (1767,)]
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    return params


def time_steps(option: dict, repeats: int) -> tuple[list[float], int]:
    params = minilm_like_parameters()
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-4, **option)
    optimizer.step()  # warm-up: creates the state
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times, sum(p.numel() for p in params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "optimizer_step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"default (for-loop)": {}, "foreach": {"foreach": True}, "fused (medcoder)": {"fused": True}}
    results = {}
    n_params = 0
    for name, option in variants.items():
        times, n_params = time_steps(option, args.repeats)
        results[name] = {"median_s": statistics.median(times), "runs_s": times}
    base = results["default (for-loop)"]["median_s"]
    lines = [
        "# One AdamW step over MiniLM-sized parameters (CPU)",
        "",
        f"`bench/optimizer_step.py`: {n_params / 1e6:.1f}M parameters (MiniLM-L6 + a 1,767-code label-attention head), "
        f"{args.threads} threads, median of {args.repeats} steps.",
        "",
        "| optimizer | median s/step | speed-up |",
        "|---|---|---|",
        *(f"| {name} | {r['median_s']:.3f} | {base / r['median_s']:.1f}x |" for name, r in results.items()),
        "",
    ]
    atomic_write_text(args.output.with_suffix(".md"), "\n".join(lines))
    atomic_write_json(args.output.with_suffix(".json"), {"parameters": n_params, "threads": args.threads, **results})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
