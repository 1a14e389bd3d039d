"""F1 by code-frequency bin for several trained models: a Markdown table and a grouped bar plot (PNG).

    .venv/bin/python bench/f1_by_frequency.py runs/tfidf runs/caml --names TF-IDF+LR CAML \\
        --output bench/results/f1_by_frequency

Reads each model folder's metrics.json (test split, all-gold label space) and writes
OUTPUT.md and OUTPUT.png. A seed ensemble of ``medcoder experiment`` (``seed_ensemble: true``)
has no folder; name it as ``RESULTS.json#ROW``, e.g.
``"runs/codiesp-neural/results.json#caml (ensemble of 3 seeds)"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medcoder.errors import MedcoderError  # noqa: E402
from medcoder.io import atomic_write_text, read_json_file  # noqa: E402


def load_bins(model: str) -> list[dict]:
    if "#" in model:  # an experiment's row: results.json#ROW
        path, row = model.split("#", 1)
        results = read_json_file(path)
        records = [r for r in results.get("runs", []) + results.get("ensembles", []) if r.get("variant") == row]
        if len(records) != 1:
            raise MedcoderError(f"{path}: expected one run or ensemble named {row!r}, found {len(records)}")
        metrics, where = records[0]["metrics"], f"{path}#{row}"
    else:
        metrics, where = read_json_file(Path(model) / "metrics.json"), str(Path(model) / "metrics.json")
    bins = metrics.get("test", {}).get("f1_by_frequency")
    if not bins:
        raise MedcoderError(f"{where}: no test f1_by_frequency (a multi-label model is needed)")
    return bins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders or RESULTS.json#ROW")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--output", type=Path, default=Path("bench/results/f1_by_frequency"))
    args = parser.parse_args()
    names = args.names or [m.split("#", 1)[-1] if "#" in m else Path(m).name for m in args.models]
    if len(names) != len(args.models):
        print("error: give one --names entry per model", file=sys.stderr)
        return 2
    try:
        all_bins = [load_bins(m) for m in args.models]
    except MedcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = [row["bin"] for row in all_bins[0]]
    if any([row["bin"] for row in bins] != labels for bins in all_bins):
        print("error: the models use different frequency bins", file=sys.stderr)
        return 2
    lines = [
        "| train docs per code | codes | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for i, label in enumerate(labels):
        cells = [f"{bins[i]['macro_f1']:.3f}" if bins[i]["macro_f1"] is not None else "—" for bins in all_bins]
        lines.append(f"| {label} | {all_bins[0][i]['n_labels']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output.with_suffix(".md"), table)

    width = 0.8 / len(names)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, (name, bins) in enumerate(zip(names, all_bins, strict=True)):
        values = [row["macro_f1"] or 0.0 for row in bins]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [f"{lab}\n({row['n_labels']} codes)" for lab, row in zip(labels, all_bins[0], strict=True)])
    ax.set_xlabel("documents per code in train")
    ax.set_ylabel("macro-F1 (test, all gold)")
    ax.set_title("F1 by code frequency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"), dpi=120)
    print(f"wrote {args.output.with_suffix('.md')} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
