"""The scale table: MIMIC-size synthetic corpora through medcoder's own commands, time and peak RSS of each step.

    python bench/scale.py                       # MIMIC-III-full shape at 10%, 30% and 100%; every step
    python bench/scale.py --sizes 0.1 --steps prep tfidf predict
    python bench/scale.py --mimic4-prep         # also: reading + label space of the MIMIC-IV-ICD-10-size corpus

Corpora come from the ``synthetic_scale`` generator (medcoder.data.synthetic_scale), written once to JSONL
under ``--work`` (a fraction f keeps the shape's split proportions: f x 47,723 / 1,631 / 3,372 notes, codes
drawn from the same 8,922). Each step is a separate process, measured with ``os.wait4`` (its own wall
time and peak RSS):

- prep:    read the JSONL with the ``jsonl`` source and fit the label space (``load_dataset`` + ``fit_label_space``)
- tfidf:   ``medcoder train`` TF-IDF + label tree (L2-loss SVM, pruned weights), the whole run: reading,
           features, training, dev calibration + thresholds, test metrics, the bundle; bundle size on disk
- caml:    ``medcoder train`` CAML (2,500 tokens, 50 filters of width 10, 100-d embeddings) for one epoch
- predict: ``medcoder predict`` (streaming batch mode) of the TF-IDF bundle over the test notes: notes/s

Writes bench/results/scale.md (and .json). Machines are noisy: one run per cell, quoted as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
MEDCODER = str(VENV_BIN / "medcoder")

PREP = """
import json, sys
from medcoder.config import DataConfig, LabelConfig
from medcoder.data.dataset import fit_label_space, load_dataset
splits = load_dataset(DataConfig.model_validate({"source": {"kind": "jsonl", "path": sys.argv[1]}}))
labels = fit_label_space(LabelConfig(system="icd10cm"), "multilabel", splits["train"])
freq = sorted(labels.train_freq.values())
print(json.dumps({"notes": {k: len(v) for k, v in splits.items()}, "labels": len(labels),
                  "labels_under_10_train_notes": sum(f < 10 for f in freq),
                  "codes_per_note": sum(len(n.labels) for n in splits["train"]) / len(splits["train"]),
                  "chars": sum(len(n.text) for v in splits.values() for n in v)}))
"""

TFIDF = """kind: train
name: scale-tfidf-tree
data:
  source: {{kind: jsonl, path: {path}}}
labels: {{system: icd10cm}}
model: {{type: tfidf_lr.v1, ngram_range: [1, 1], min_df: 2, loss: svm, C: 1.0, method: tree, prune: 0.05, n_jobs: 2}}
thresholds: {{strategy: global}}
"""

CAML = """kind: train
name: scale-caml
data:
  source: {{kind: jsonl, path: {path}}}
labels: {{system: icd10cm}}
model:
  type: caml.v1
  encoding: {{max_tokens: 2500}}
  embedding: {{dim: 100}}
  kernel_size: 10
  num_filters: 50
  train: {{epochs: 1, batch_size: 16, lr: 0.001, num_threads: 2}}
thresholds: {{strategy: global}}
"""


def measure(command: list[str], log: Path) -> dict:
    """Run ``command``; its wall seconds, peak RSS (MB) and exit status, from ``os.wait4`` (this child only)."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
        raise SystemExit(f"{' '.join(command[:4])}... failed ({process.returncode}); {log}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def corpus(work: Path, shape: str, fraction: float) -> Path:
    from medcoder.data.synthetic_scale import ScaleSource, write_scale_corpus

    path = work / f"{shape}-{fraction:g}.jsonl"
    if not path.exists():
        source = ScaleSource.scaled(shape, fraction)
        start = time.perf_counter()
        write_scale_corpus(source, path)
        print(f"wrote {path} ({source.n_notes:,} notes) in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def train(work: Path, tag: str, name: str, config_text: str) -> tuple[dict, Path, dict]:
    """``medcoder train`` of one config, measured: (figures with the run's timing, the bundle, its ``info``)."""
    config = work / f"{tag}.{name}.yaml"
    config.write_text(config_text)
    bundle = work / f"{tag}.{name}"
    figures = measure([MEDCODER, "train", str(config), "-o", str(bundle)], work / f"{tag}.{name}.log")
    info = json.loads((bundle / "config.json").read_text())["info"]
    return figures | {"timing": info.get("timing", {})}, bundle, info


def run_size(work: Path, shape: str, fraction: float, steps: list[str]) -> dict:
    path = corpus(work, shape, fraction)
    tag = f"{shape}-{fraction:g}"
    row: dict = {"shape": shape, "fraction": fraction, "corpus_mb": path.stat().st_size / 1e6}
    if "prep" in steps:
        out = work / f"{tag}.prep.json"
        row["prep"] = measure([sys.executable, "-c", PREP, str(path)], out)
        row["corpus"] = json.loads(out.read_text().strip().splitlines()[-1])
        print(tag, "prep", row["prep"], row["corpus"], flush=True)
    if "tfidf" in steps:
        row["tfidf"], bundle, info = train(work, tag, "tfidf", TFIDF.format(path=path))
        metrics = json.loads((bundle / "metrics.json").read_text())
        row["tfidf"] |= {
            "bundle_mb": _dir_mb(bundle),
            "weights_mb": (bundle / "model.safetensors").stat().st_size / 1e6,
            "test_map": metrics["test"]["all_gold"]["map"] if "all_gold" in metrics.get("test", {}) else None,
        }
        print(tag, "tfidf", json.dumps(row["tfidf"]), flush=True)
    if "caml" in steps:
        row["caml"], _, info = train(work, tag, "caml", CAML.format(path=path))
        history = info.get("training", {}).get("members", [{}])[0].get("history", [])  # the first seed's epochs
        epochs = [e for e in history if e.get("epoch", 0) > 0]
        row["caml"]["epoch_s"] = epochs[0]["seconds"] if epochs else None
        print(tag, "caml", json.dumps(row["caml"]), flush=True)
    if "predict" in steps and (work / f"{tag}.tfidf").exists():
        notes = work / f"{tag}.test.jsonl"
        with path.open() as src, notes.open("w") as dst:
            for line in src:
                record = json.loads(line)
                if record["split"] == "test":
                    dst.write(json.dumps({"id": record["id"], "text": record["text"]}) + "\n")
        output = work / f"{tag}.predictions.jsonl"
        command = [MEDCODER, "-q", "predict", str(work / f"{tag}.tfidf"), str(notes), "-o", str(output), "--overwrite"]
        row["predict"] = measure(command, work / f"{tag}.predict.log")
        summary = json.loads(output.with_name(output.name + ".summary.json").read_text())
        row["predict"] |= {"summary": summary}
        print(tag, "predict", json.dumps(row["predict"]), flush=True)
    return row


def render(rows: list[dict], mimic4: dict | None, command: str) -> str:
    lines = [
        "# Scale: MIMIC-size synthetic corpora on one 2-core machine",
        "",
        f"`{command}`. One process per step (wall time, peak RSS from `os.wait4`). TF-IDF: unigrams, label tree",
        "(K=100, beam 10), L2-loss SVM, weights pruned below 0.05; the whole `medcoder train` run.",
        "CAML: one epoch at 2,500 tokens (train column: that epoch alone; the run adds reading, vocabulary,",
        "encoding and scoring dev/test). Predict: `medcoder predict` over the test notes.",
        "",
        "| corpus | prep s / peak RSS | TF-IDF run s / peak RSS / bundle | CAML epoch s / run s / peak RSS | predict notes/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.get("corpus", {})
        size = f"{sum(c.get('notes', {}).values()):,} notes, {c.get('labels', 0):,} labels" if c else r["fraction"]
        prep = f"{r['prep']['wall_s']:.0f} s / {r['prep']['peak_rss_mb'] / 1024:.2f} GB" if "prep" in r else "—"
        t = r.get("tfidf")
        tfidf = (
            f"{t['wall_s']:.0f} s (training {t['timing']['train']:.0f} s) / {t['peak_rss_mb'] / 1024:.2f} GB / "
            f"{t['bundle_mb']:.0f} MB (test MAP {t['test_map']:.3f})"
            if t
            else "—"
        )
        k = r.get("caml")
        caml = f"{k['epoch_s']:.0f} / {k['wall_s']:.0f} / {k['peak_rss_mb'] / 1024:.2f} GB" if k else "—"
        p = r.get("predict")
        predict = f"{p['summary']['notes_per_second']:.0f} ({p['wall_s']:.0f} s with loading)" if p else "—"
        lines.append(f"| {size} | {prep} | {tfidf} | {caml} | {predict} |")
    if mimic4:
        c = mimic4["corpus"]
        lines += [
            "",
            f"MIMIC-IV-ICD-10 size, prep only: {sum(c['notes'].values()):,} notes ({mimic4['corpus_mb']:.0f} MB JSONL), "
            f"{c['labels']:,} labels: {mimic4['prep']['wall_s']:.0f} s, peak RSS "
            f"{mimic4['prep']['peak_rss_mb'] / 1024:.2f} GB.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--steps", nargs="+", default=["prep", "tfidf", "caml", "predict"])
    parser.add_argument("--caml-sizes", type=float, nargs="*", help="sizes that train CAML (default: all)")
    parser.add_argument("--mimic4-prep", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medcoder-scale"))
    parser.add_argument("--results", type=Path, default=BENCH / "results" / "scale.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for fraction in args.sizes:
        steps = list(args.steps)
        if args.caml_sizes is not None and fraction not in args.caml_sizes and "caml" in steps:
            steps.remove("caml")
        rows.append(run_size(args.work, "mimic3-full", fraction, steps))
    mimic4 = run_size(args.work, "mimic4-icd10", 1.0, ["prep"]) if args.mimic4_prep else None
    command = "python bench/scale.py " + " ".join(sys.argv[1:])
    text = render(rows, mimic4, command.strip())
    args.results.write_text(text)
    args.results.with_suffix(".json").write_text(json.dumps({"rows": rows, "mimic4": mimic4}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
