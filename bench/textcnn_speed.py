"""Benchmark: TextCNN training throughput at 2,500 tokens on this machine (fp32 vs bf16), and peak memory.

Each variant runs in its own process (so peak RSS is its own), trains one
epoch of the shared training loop on random token ids with the default
TextCNN config (embedding 100, filters 3/4/5 x 100), after a warm-up epoch,
and reports documents per second. Repeats give a median.

    .venv/bin/python bench/textcnn_speed.py [--docs 320] [--repeats 3] [--threads 2]

Writes bench/results/textcnn_speed.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from medcoder.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def run_variant(precision: str, docs: int, tokens: int, threads: int, labels: int) -> dict:
    import numpy as np
    import torch

    from medcoder.config import TrainConfig
    from medcoder.data.encoding import EncodedCorpus, LengthBucketPlan, collate
    from medcoder.engine.loop import train_loop
    from medcoder.models.networks.cnn import TextCNN

    rng = np.random.default_rng(0)
    corpus = EncodedCorpus(
        ids=[rng.integers(2, 20_000, size=tokens, dtype=np.int32) for _ in range(docs)],
        lengths=np.full(docs, tokens, dtype=np.int64),
    )
    y = rng.random((docs, labels)) < 0.01
    torch.manual_seed(0)
    model = TextCNN(20_000, 100, labels)
    config = TrainConfig(epochs=1, batch_size=16, precision=precision, num_threads=threads)
    plan = LengthBucketPlan(corpus.lengths, batch_size=16, seed=0)

    def loss_fn(module, batch):
        logits = module(batch["input_ids"], batch["mask"]).logits.float()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])

    def make_batch(indices, epoch, step):
        return collate(corpus, indices, labels=y)

    train_loop(model, plan, make_batch, loss_fn, config)  # warm-up: allocator, kernels, threads
    start = time.perf_counter()
    train_loop(model, plan, make_batch, loss_fn, config)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"precision": precision, "docs_per_s": docs / seconds, "seconds": seconds, "peak_rss_mb": peak_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=320)
    parser.add_argument("--tokens", type=int, default=2500)
    parser.add_argument("--labels", type=int, default=1767)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.docs, args.tokens, args.threads, args.labels)))
        return 0
    results: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        for precision in results:  # interleaved, so machine noise hits both alike
            command = [
                sys.executable,
                __file__,
                "--variant",
                precision,
                "--docs",
                str(args.docs),
                "--tokens",
                str(args.tokens),
                "--threads",
                str(args.threads),
                "--labels",
                str(args.labels),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[precision].append(json.loads(output.strip().splitlines()[-1]))
    lines = [
        f"# TextCNN training throughput, {args.tokens} tokens, batch 16, {args.labels} labels, "
        f"{args.threads} threads, {args.docs} docs/epoch, median of {args.repeats}",
        "",
        "| precision | docs/s (median) | runs | peak RSS MB (max) |",
        "|---|---|---|---|",
    ]
    medians = {}
    for precision, runs in results.items():
        speeds = [r["docs_per_s"] for r in runs]
        medians[precision] = statistics.median(speeds)
        lines.append(
            f"| {precision} | {medians[precision]:.1f} | {', '.join(f'{s:.1f}' for s in speeds)} | "
            f"{max(r['peak_rss_mb'] for r in runs):.0f} |"
        )
    lines += ["", f"bf16 / fp32 speed ratio: {medians['bf16'] / medians['fp32']:.2f}", ""]
    report = "\n".join(lines)
    print(report)
    atomic_write_text(ROOT / "bench" / "results" / "textcnn_speed.md", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
