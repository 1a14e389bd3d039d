"""Benchmark: where a transformer fine-tuning step spends its time (cProfile over one epoch).

``transformer.v1`` (MiniLM unless --encoder, trun 512 tokens, --head) is fitted
for one epoch on --docs CodiEsp-D training notes under cProfile, after a
one-batch warm-up outside the profile. Every function's own time (tottime) is
put in one of four buckets:

- torch kernels: built-in (C/C++) functions and methods, forward and backward
  (``run_backward``) and the optimizer's fused updates;
- medcoder Python: functions defined under ``src/medcoder``: the loop, batching,
  collation, the heads' Python glue;
- torch/transformers Python: the Python layers of torch and transformers
  (module ``__call__``, hooks, HF's forward functions);
- other Python: numpy's Python layer, the standard library, ...

The point is the second bucket: per-step Python overhead of our own code must
not show next to the kernels.

    .venv/bin/python bench/transformer_profile.py [--docs 32] [--head label_attention]

Writes bench/results/transformer_profile.md and .json.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

from medcoder.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_speed import DATA, ROOT, load_notes  # noqa: E402  (the same notes as the speed benchmark)

SRC = str(ROOT / "src" / "medcoder")


def bucket(filename: str, name: str) -> str:
    if filename == "~" or filename.startswith("<built-in"):
        return "torch kernels" if "torch" in name or "method" in name or "run_backward" in name else "other Python"
    if filename.startswith(SRC) or "/medcoder/" in filename:
        return "medcoder Python"
    if "/torch/" in filename or "/transformers/" in filename:
        return "torch/transformers Python"
    return "other Python"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--head", choices=["pooled", "label_attention"], default="label_attention")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "transformer_profile")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"error: {DATA} not found (the shared data folder sits beside the repository)", file=sys.stderr)
        return 2

    import numpy as np

    from medcoder.config import RunConfig, validate
    from medcoder.models import build_model

    texts, y, codes = load_notes(args.docs)
    raw = {
        "type": "transformer.v1",
        "encoder": args.encoder,
        "architecture": "trun",
        "max_tokens": 512,
        "head": args.head,
        "train": {"epochs": 1, "batch_size": args.batch_size, "num_threads": args.threads},
    }
    config = validate(RunConfig, {"model": raw}, source="bench").model
    warm = build_model(config, n_labels=len(codes), task="multilabel", seed=0)
    warm.fit(texts[: args.batch_size], np.asarray(y[: args.batch_size]))
    model = build_model(config, n_labels=len(codes), task="multilabel", seed=0)
    profiler = cProfile.Profile()
    profiler.enable()
    model.fit(texts, np.asarray(y))
    profiler.disable()

    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    rows = []
    for (filename, line, name), (_, calls, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        kind = bucket(filename, name)
        totals[kind] = totals.get(kind, 0.0) + tottime
        rows.append((tottime, calls, kind, f"{Path(filename).name}:{line}({name})"))
    whole = sum(totals.values())
    rows.sort(reverse=True)
    epoch = model.training_report()["members"][0]["history"][0]
    steps = -(-args.docs // args.batch_size)
    report = {
        "encoder": args.encoder,
        "head": args.head,
        "docs": args.docs,
        "batch_size": args.batch_size,
        "steps": steps,
        "profiled_seconds": whole,
        "docs_per_s_under_profile": epoch.get("docs_per_s"),
        "buckets": {k: {"seconds": v, "share": v / whole} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "top": [{"tottime": t, "calls": c, "bucket": k, "function": f} for t, c, k, f in rows[: args.top]],
    }
    lines = [
        "# Where a transformer fine-tuning step spends its time (cProfile)",
        "",
        f"`bench/transformer_profile.py`: {args.encoder}, trun 512 tokens, head {args.head}, {len(codes):,} labels, "
        f"{args.docs} CodiEsp-D train notes, batch {args.batch_size} ({steps} steps), {args.threads} threads; "
        f"{whole:.1f} s profiled ({whole / steps:.2f} s a step).",
        "",
        "| bucket | seconds | share | per step |",
        "|---|---|---|---|",
        *(
            f"| {k} | {v['seconds']:.2f} | {100 * v['share']:.1f}% | {v['seconds'] / steps * 1000:.0f} ms |"
            for k, v in report["buckets"].items()
        ),
        "",
        f"Top {args.top} functions by own time:",
        "",
        "| own s | calls | bucket | function |",
        "|---|---|---|---|",
        *(f"| {t:.2f} | {c} | {k} | `{f}` |" for t, c, k, f in rows[: args.top]),
        "",
    ]
    atomic_write_text(args.output.with_suffix(".md"), "\n".join(lines))
    atomic_write_json(args.output.with_suffix(".json"), report)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
