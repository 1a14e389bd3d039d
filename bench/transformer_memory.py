"""Benchmark: peak memory of hierarchical transformer fine-tuning on 4,000-token notes, and inference speed.

1. Training: ``transformer.v1`` hier + label-wise attention (MiniLM unless
   --encoder, segments of 128 tokens, all segments of a batch in one encoder
   pass) on CodiEsp-D training notes joined until each holds --tokens tokens;
   one epoch of --docs notes; peak RSS of the process (target <= 3 GB).
2. Inference: the trained model saved as a bundle, then ``medcoder.load`` on
   CodiEsp-D test notes truncated to 512 tokens (a trun bundle): notes/s,
   median of --repeats passes.

Each part runs in its own process so peak RSS is its own.

    .venv/bin/python bench/transformer_memory.py [--docs 8] [--tokens 4000]

Writes bench/results/transformer_memory.md and .json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medcoder.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"


def _splits():
    from medcoder.config import RunConfig, validate
    from medcoder.data.dataset import fit_label_space, load_dataset

    config = validate(
        RunConfig,
        {"data": {"source": {"kind": "jsonl", "path": str(DATA)}}, "labels": {"system": "icd10cm"}},
        source="bench",
    )
    splits = load_dataset(config.data)
    return splits, fit_label_space(config.labels, config.task.type, splits["train"])


def train_hier(encoder: str, docs: int, tokens: int, threads: int, checkpointing: bool) -> dict:
    import numpy as np

    from medcoder.config import RunConfig, validate
    from medcoder.data.subwords import SubwordEncoder
    from medcoder.models import build_model
    from medcoder.models.hf_encoders import load_encoder

    splits, labels = _splits()
    train = splits["train"]
    _, tokenizer = load_encoder(encoder, attention_dropout=0.0)
    counter = SubwordEncoder(tokenizer)
    texts, y, i = [], [], 0
    for _ in range(docs):  # join consecutive notes until the text holds `tokens` subword tokens
        parts, codes, n = [], set(), 0
        while n < tokens:
            note = train[i % len(train)]
            parts.append(note.text)
            codes.update(note.labels)
            n += len(counter.encode([note.text], max_tokens=10**9).ids[0])
            i += 1
        texts.append("\n\n".join(parts))
        y.append(labels.transform([sorted(codes)])[0])
    raw = {
        "type": "transformer.v1",
        "encoder": encoder,
        "architecture": "hier",
        "head": "label_attention",
        "max_tokens": tokens,
        "segment_length": 128,
        "gradient_checkpointing": checkpointing,
        "train": {"epochs": 1, "batch_size": 2, "num_threads": threads},
    }
    config = validate(RunConfig, {"model": raw}, source="bench").model
    model = build_model(config, n_labels=len(labels), task="multilabel", seed=0)
    start = time.perf_counter()
    model.fit(texts, np.asarray(y))
    seconds = time.perf_counter() - start
    lengths = [len(a) for a in model._encode(texts).ids]
    return {
        "docs": docs,
        "tokens_per_doc": statistics.median(lengths),
        "segments_per_doc": statistics.median(-(-n // 126) for n in lengths),
        "train_seconds": seconds,
        "docs_per_s": model.training_report()["members"][0]["history"][0]["docs_per_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def inference(encoder: str, threads: int, repeats: int, precision: str) -> dict:
    import torch

    import medcoder
    from medcoder.config import RunConfig, validate
    from medcoder.training.run import train_run

    torch.set_num_threads(threads)
    splits, _ = _splits()
    model = {
        "type": "transformer.v1",
        "encoder": encoder,
        "architecture": "trun",
        "max_tokens": 512,
        "train": {"epochs": 1, "batch_size": 8, "num_threads": threads, "precision": precision},
    }
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.jsonl"  # a small bundle: 16 train, 16 dev, 16 test notes
        rows = [
            {"id": n.id, "text": n.text, "labels": list(n.labels), "split": split}
            for split in ("train", "dev", "test")
            for n in splits[split][:16]
        ]
        sample.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        config = validate(
            RunConfig,
            {
                "data": {"source": {"kind": "jsonl", "path": str(sample)}},
                "labels": {"system": "icd10cm"},
                "model": model,
            },
            source="bench",
        )
        bundle = train_run(config, Path(folder) / "model").bundle_dir
        predictor = medcoder.load(bundle)
        texts = [n.text for n in splits["test"]]
        predictor.predict(texts[:8])  # warm-up
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.predict(texts)
            rates.append(len(texts) / (time.perf_counter() - start))
    return {"notes": len(texts), "notes_per_s": statistics.median(rates), "runs": rates, "precision": precision}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time bf16 inference (emulated, very slow, on CPUs without AVX512-BF16/AMX)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "transformer_memory")
    parser.add_argument(
        "--child", choices=["train", "train-checkpointing", "infer-auto", "infer-bf16"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("train"):
            result = train_hier(
                args.encoder, args.docs, args.tokens, args.threads, args.child.endswith("checkpointing")
            )
        else:
            result = inference(args.encoder, args.threads, args.repeats, args.child.split("-")[1])
        print(json.dumps(result))
        return 0
    if not DATA.is_file():
        print(f"error: {DATA} not found (the shared data folder sits beside the repository)", file=sys.stderr)
        return 2
    results = {}
    children = ["train", "train-checkpointing", "infer-auto"] + (["infer-bf16"] if args.bf16 else [])
    for child in children:
        command = [
            sys.executable,
            __file__,
            "--child",
            child,
            "--docs",
            str(args.docs),
            "--tokens",
            str(args.tokens),
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--encoder",
            args.encoder,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results[child] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{child}: {results[child]}", file=sys.stderr)
    lines = [
        f"# Hierarchical fine-tuning memory on {args.tokens}-token notes, and inference at 512 tokens (2 CPU threads)",
        "",
        f"`{' '.join(['bench/transformer_memory.py', *sys.argv[1:]])}`, encoder {args.encoder}.",
        "",
        "| training (hier + label attention, segments of 128, batch 2) | tokens/note | segments/note | docs/s | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for child in ("train", "train-checkpointing"):
        r = results[child]
        name = "gradient checkpointing" if child.endswith("checkpointing") else "default"
        lines.append(
            f"| {name} | {r['tokens_per_doc']:.0f} | {r['segments_per_doc']:.0f} | {r['docs_per_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| inference through medcoder.load (trun 512) | notes | notes/s (median) | runs |",
        "|---|---|---|---|",
    ]
    for child in [c for c in children if c.startswith("infer")]:
        r = results[child]
        runs = ", ".join(f"{x:.2f}" for x in r["runs"])
        lines.append(f"| precision {r['precision']} | {r['notes']} | {r['notes_per_s']:.2f} | {runs} |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.output.with_suffix(".md"), table)
    atomic_write_json(args.output.with_suffix(".json"), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
