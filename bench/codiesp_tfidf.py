"""Benchmark: TF-IDF + LR on CodiEsp-D English, official split (METRICS.md conventions).

Reports test MAP, micro-F1, macro-F1 (all), P@8 in the all-gold label space,
train and predict time, and the "rank codes by train frequency" reference,
computed with the same evaluation code. Thresholds are tuned on dev only.

    .venv/bin/python bench/codiesp_tfidf.py [--data PATH] [--jobs N] [--output DIR]

Writes bench/results/codiesp_tfidf.{md,json}. Needs ../shared/data (not shipped).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import medcoder
from medcoder.config import RunConfig, validate
from medcoder.data.dataset import load_dataset
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.evaluation.scoring import score_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.training.run import train_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"
ROWS = (("MAP", "map"), ("micro-F1", "micro_f1"), ("macro-F1 (all)", "macro_f1"), ("P@8", "p_at_8"))


def frequency_baseline(labels: LabelSpace, splits: dict[str, list[Note]]) -> dict:
    """Every test note gets the same ranking: codes by train frequency."""
    prior = np.array([labels.train_freq[c] for c in labels.codes], dtype=np.float64) / len(splits["train"])
    dev_scores = np.tile(prior, (len(splits["dev"]), 1))
    thresholds = Thresholds.tune(labels.transform([n.labels for n in splits["dev"]]), dev_scores, "global")
    test_scores = np.tile(prior, (len(splits["test"]), 1))
    return score_notes(test_scores, splits["test"], labels, thresholds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for one-vs-rest training")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: not found (the CodiEsp JSONL lives in ../shared/data/codiesp)", file=sys.stderr)
        return 2
    config = validate(
        RunConfig,
        {
            "name": "codiesp-d-en-tfidf-lr",
            "data": {"source": {"kind": "jsonl", "path": str(args.data)}},
            "labels": {"system": "icd10cm"},
            "model": {
                "type": "tfidf_lr.v1",
                "ngram_range": [1, 2],
                "min_df": 2,
                "sublinear_tf": True,
                "C": 100,
                "n_jobs": args.jobs,
            },
        },
        source="bench",
    )
    bundle_dir = args.output / "codiesp_tfidf_model"
    try:
        result = train_run(config, bundle_dir)
        splits = load_dataset(config.data)
        texts = [n.text for n in splits["test"]]
        load_start = time.perf_counter()
        predictor = medcoder.load(bundle_dir)
        load_s = time.perf_counter() - load_start
        predict_start = time.perf_counter()
        predictor.predict(texts, top_k=8)
        predict_s = time.perf_counter() - predict_start
        baseline = frequency_baseline(predictor.bundle.labels, splits)
    except MedcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    test = result.metrics["test"]["all_gold"]
    lines = [
        "# TF-IDF + LR on CodiEsp-D English (official split)",
        "",
        f"train {len(splits['train'])} docs, "
        f"dev {len(splits['dev'])}, test {len(splits['test'])}; label space {len(predictor.codes)} train codes; "
        f"all-gold test space {test['n_labels']} labels ({test['n_unseen_codes']} unseen codes, "
        f"{test['n_unseen_assignments']} unseen assignments); global threshold tuned on dev = "
        f"{result.metrics['test']['thresholds']['global']:.4f}",
        "",
        "| system | " + " | ".join(title for title, _ in ROWS) + " |",
        "|---|" + "---|" * len(ROWS),
        "| rank codes by train frequency | " + " | ".join(f"{baseline['all_gold'][k]:.3f}" for _, k in ROWS) + " |",
        "| TF-IDF (1-2 grams, sublinear tf, min_df 2) + one-vs-rest LR, C = 100 | "
        + " | ".join(f"{test[k]:.3f}" for _, k in ROWS)
        + " |",
        "",
        f"- train time (features + {len(predictor.codes)} binary LRs, {args.jobs} processes): {result.timing['train']:.1f} s",
        f"- bundle load: {load_s:.2f} s; predict {len(texts)} test notes via medcoder.load: {predict_s:.2f} s "
        f"({1000 * predict_s / len(texts):.1f} ms/note)",
        f"- bundle size: {sum(p.stat().st_size for p in bundle_dir.iterdir()) / 1e6:.1f} MB",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    atomic_write_text(args.output / "codiesp_tfidf.md", report)
    atomic_write_json(
        args.output / "codiesp_tfidf.json",
        {
            "tfidf_lr": result.metrics["test"],
            "frequency_baseline": baseline,
            "timing": {**result.timing, "bundle_load_s": load_s, "predict_test_s": predict_s},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
