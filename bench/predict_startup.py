"""How long ``medcoder predict`` takes on one note with a TF-IDF model, and what it imports.

Trains a small TF-IDF bundle on synthetic notes with the ``medcoder`` on the
path, then runs ``python -m medcoder.cli predict BUNDLE NOTE`` ``--runs`` times
(wall time, median and range) and once under ``python -X importtime`` to list
the heavy libraries the command imported. Everything goes through the command
line, so the script also measures an older checkout::

    PYTHONPATH=/path/to/old/src .venv/bin/python bench/predict_startup.py --label before
    .venv/bin/python bench/predict_startup.py --label after --report bench/results/predict_startup.md

With ``--report`` the rows of earlier runs in that file are kept (one row per label).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "sklearn", "transformers", "sentence_transformers", "simple_icd_10_cm", "spacy", "joblib")
NOTE = "Patient with essential hypertension and type 2 diabetes mellitus, on metformin.\n"
CONFIG = """name: startup
data: {source: {kind: synthetic, n_notes: 300, n_codes: 20, seed: 1}}
labels: {system: icd10cm}
model: {type: tfidf_lr.v1, n_jobs: 1}
"""


def medcoder(*args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "medcoder.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done


def heavy_imports(stderr: str) -> list[str]:
    """Top-level packages of :data:`HEAVY` in ``-X importtime`` output."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[-1].strip().split(".")[0]
            if module in HEAVY:
                found.add(module)
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="the row's name (before, after...)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--report", type=Path, help="Markdown table to add this row to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "run.yaml").write_text(CONFIG, encoding="utf-8")
        (work / "note.txt").write_text(NOTE, encoding="utf-8")
        medcoder("-q", "train", str(work / "run.yaml"), "-o", str(work / "model"))
        predict = ("-q", "predict", str(work / "model"), str(work / "note.txt"))
        medcoder(*predict)  # warm-up: file caches
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            medcoder(*predict)
            seconds.append(time.perf_counter() - start)
        imported = heavy_imports(medcoder(*predict, importtime=True).stderr)
    row = (
        f"| {args.label} | {statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f} | {args.runs} | "
        f"{', '.join(imported) or 'none'} |"
    )
    print(row)
    if args.report is not None:
        from medcoder.io import atomic_write_text

        header = [
            "# `medcoder predict` on one note with a TF-IDF bundle (bench/predict_startup.py)",
            "",
            "Wall time of the whole command (Python start, imports, loading the bundle, coding the note), "
            "2 cores; heavy libraries it imported, read from `python -X importtime`.",
            "",
            "| version | median s | range s | runs | heavy libraries imported |",
            "|---|---|---|---|---|",
        ]
        rows = []
        if args.report.is_file():
            rows = [
                line for line in args.report.read_text().splitlines() if line.startswith("| ") and "---" not in line
            ]
            rows = [line for line in rows[1:] if not line.startswith(f"| {args.label} |")]
        atomic_write_text(args.report, "\n".join(header + rows + [row]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
