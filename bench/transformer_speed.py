"""Benchmark: transformer fine-tuning throughput at 512 tokens, medcoder vs a plain Hugging Face Trainer.

Same encoder (the packaged MiniLM-L6 unless --encoder), same notes (the first
--docs training notes of CodiEsp-D English), same label space (every training
code, 1,767), same batch size, same machine, one process per measurement (so
peak RSS is its own), interleaved over --repeats rounds; medians and the ratio.

- baseline: ``AutoModelForSequenceClassification`` (multi-label) + ``Trainer``
  with the checkpoint's own config (attention dropout 0.1), fp32, tokenizer
  truncation at 512 and ``DataCollatorWithPadding``: what the tutorials do.
- medcoder: ``transformer.v1`` (trun, 512 tokens) through medcoder's loop with
  its defaults (attention dropout 0, length bucketing, precision auto: bf16
  autocast only where the CPU/GPU has native bf16), pooled head (the
  baseline's) and label-wise attention; ``--variants`` adds forced bf16.

Throughput is training documents per second of one epoch after a warm-up of
one batch (model loading and tokenisation excluded for both).

    .venv/bin/python bench/transformer_speed.py [--docs 48] [--repeats 3]

Writes bench/results/transformer_speed.md and .json.
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
from typing import Any

from medcoder.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"
VARIANTS = ("hf-trainer", "medcoder-pooled-auto", "medcoder-law-auto", "medcoder-pooled-bf16", "medcoder-law-bf16")
DEFAULT_VARIANTS = VARIANTS[:3]  # bf16 autocast is emulated (very slow) on CPUs without AVX512-BF16/AMX


def load_notes(docs: int) -> tuple[list[str], Any, list[str]]:
    from medcoder.config import RunConfig, validate
    from medcoder.data.dataset import fit_label_space, load_dataset

    config = validate(
        RunConfig,
        {"data": {"source": {"kind": "jsonl", "path": str(DATA)}}, "labels": {"system": "icd10cm"}},
        source="bench",
    )
    train = load_dataset(config.data)["train"]
    labels = fit_label_space(config.labels, config.task.type, train)
    notes = train[:docs]
    return [n.text for n in notes], labels.transform([n.labels for n in notes]), labels.codes


def run_hf_trainer(encoder: str, docs: int, batch_size: int, threads: int) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from medcoder.models.hf_encoders import resolve_encoder

    hf_logging.set_verbosity_error()
    torch.set_num_threads(threads)
    texts, y, codes = load_notes(docs)
    location = resolve_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSequenceClassification.from_pretrained(
        location, num_labels=len(codes), problem_type="multi_label_classification"
    )
    encoded = tokenizer(texts, truncation=True, max_length=512)
    rows = [
        {
            "input_ids": encoded["input_ids"][i],
            "attention_mask": encoded["attention_mask"][i],
            "labels": y[i].astype(np.float32),
        }
        for i in range(len(texts))
    ]

    def trainer_for(dataset_rows: list[dict]) -> Trainer:
        args = TrainingArguments(
            output_dir=str(ROOT / "runs" / "bench-hf-trainer"),
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            learning_rate=5e-5,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )

        return Trainer(
            model=model,
            args=args,
            train_dataset=_ListDataset(dataset_rows),
            data_collator=DataCollatorWithPadding(tokenizer),
        )

    trainer_for(rows[:batch_size]).train()  # warm-up: one batch
    start = time.perf_counter()
    trainer_for(rows).train()
    seconds = time.perf_counter() - start
    return {"docs_per_s": len(rows) / seconds, "seconds": seconds, "peak_rss_mb": _peak_mb()}


def run_medcoder(variant: str, encoder: str, docs: int, batch_size: int, threads: int) -> dict:
    import numpy as np

    from medcoder.config import RunConfig, validate
    from medcoder.models import build_model

    texts, y, codes = load_notes(docs)
    head = "label_attention" if "law" in variant else "pooled"
    precision = variant.rsplit("-", 1)[-1]  # auto: bf16 where the hardware has it natively, else fp32
    raw = {
        "type": "transformer.v1",
        "encoder": encoder,
        "architecture": "trun",
        "max_tokens": 512,
        "head": head,
        "train": {"epochs": 1, "batch_size": batch_size, "precision": precision, "num_threads": threads},
    }
    config = validate(RunConfig, {"model": raw}, source="bench").model
    warm = build_model(config, n_labels=len(codes), task="multilabel", seed=0)
    warm.fit(texts[:batch_size], np.asarray(y[:batch_size]))  # warm-up: one batch
    model = build_model(config, n_labels=len(codes), task="multilabel", seed=0)
    model.fit(texts, np.asarray(y))
    epoch = model.training_report()["members"][0]["history"][0]
    return {"docs_per_s": epoch["docs_per_s"], "seconds": epoch["seconds"], "peak_rss_mb": _peak_mb()}


class _ListDataset:
    """A map-style dataset over a list of feature dicts (what Trainer's DataLoader indexes)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "transformer_speed")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "hf-trainer":
            result = run_hf_trainer(args.encoder, args.docs, args.batch_size, args.threads)
        else:
            result = run_medcoder(args.child, args.encoder, args.docs, args.batch_size, args.threads)
        print(json.dumps(result))
        return 0
    if not DATA.is_file():
        print(f"error: {DATA} not found (the shared data folder sits beside the repository)", file=sys.stderr)
        return 2
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for round_ in range(args.repeats):
        for variant in args.variants:  # interleaved, so machine noise hits every variant alike
            command = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--docs",
                str(args.docs),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
                "--encoder",
                args.encoder,
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: {variant} {results[variant][-1]['docs_per_s']:.2f} docs/s", file=sys.stderr)
    rows = {
        v: {
            "docs_per_s": statistics.median(r["docs_per_s"] for r in runs),
            "runs": [round(r["docs_per_s"], 3) for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
        for v, runs in results.items()
    }
    base = rows.get("hf-trainer", {}).get("docs_per_s")
    lines = [
        "# Transformer fine-tuning throughput at 512 tokens (2 CPU threads)",
        "",
        f"`{' '.join(['bench/transformer_speed.py', *sys.argv[1:]])}`: encoder {args.encoder}, "
        f"{args.docs} CodiEsp-D train notes, batch {args.batch_size}, 1,767 labels; one epoch per run after a "
        f"one-batch warm-up; median of {args.repeats} interleaved runs.",
        "",
        "| variant | docs/s (median) | runs | vs HF Trainer | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for variant, row in rows.items():
        ratio = f"{row['docs_per_s'] / base:.2f}x" if base else "—"
        runs = ", ".join(f"{x:.2f}" for x in row["runs"])
        lines.append(f"| {variant} | {row['docs_per_s']:.2f} | {runs} | {ratio} | {row['peak_rss_mb']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.output.with_suffix(".md"), table)
    atomic_write_json(args.output.with_suffix(".json"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
