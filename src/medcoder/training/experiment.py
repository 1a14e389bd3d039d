"""Several runs (variants x seeds) summarised in one results table (Markdown + JSON)."""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcoder.config import ExperimentConfig
from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.progress import LogReporter, Reporter
from medcoder.training.run import train_run

logger = logging.getLogger(__name__)

# (column title, path into a run's metrics/timing) — the headline figures of METRICS.md
MULTILABEL_COLUMNS = (
    ("MAP", ("test", "all_gold", "map")),
    ("micro-F1", ("test", "all_gold", "micro_f1")),
    ("macro-F1", ("test", "all_gold", "macro_f1")),
    ("macro-F1 (gold)", ("test", "all_gold", "macro_f1_with_gold")),
    ("micro-AUC", ("test", "all_gold", "micro_auc")),
    ("P@8", ("test", "all_gold", "p_at_8")),
    ("train s", ("timing", "train")),
    ("best epoch", ("timing", "best_epoch")),
)
SINGLE_LABEL_COLUMNS = (
    ("accuracy", ("test", "accuracy")),
    ("macro-F1", ("test", "macro_f1")),
    ("train s", ("timing", "train")),
    ("best epoch", ("timing", "best_epoch")),
)


@dataclass(frozen=True)
class RunRecord:
    variant: str
    seed: int
    bundle_dir: str
    metrics: dict[str, Any]
    timing: dict[str, float]


def _lookup(record: RunRecord, path: tuple[str, ...]) -> float | None:
    node: Any = {"test": record.metrics.get("test", {}), "timing": record.timing}
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return None if node is None or (isinstance(node, float) and math.isnan(node)) else float(node)


def summarise(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Mean and sample sd over seeds of every headline column, one row per variant."""
    single = bool(records) and "accuracy" in records[0].metrics.get("test", {})
    columns = SINGLE_LABEL_COLUMNS if single else MULTILABEL_COLUMNS
    rows = []
    for variant in dict.fromkeys(r.variant for r in records):
        runs = [r for r in records if r.variant == variant]
        row: dict[str, Any] = {"variant": variant, "n_seeds": len(runs), "seeds": [r.seed for r in runs]}
        for title, path in columns:
            values = [v for v in (_lookup(r, path) for r in runs) if v is not None]
            row[title] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "values": values,
            }
        rows.append(row)
    return rows


def render_markdown(name: str, rows: list[dict[str, Any]]) -> str:
    """The results table: ``mean ± sd`` over seeds (sd 0 with one seed)."""
    if not rows:
        return f"# {name}\n\nNo runs.\n"
    titles = [k for k in rows[0] if k not in ("variant", "n_seeds", "seeds")]
    lines = [
        f"# {name}",
        "",
        "Test split, thresholds tuned on dev; all-gold label space (METRICS.md). mean ± sd over seeds.",
        "",
        "| variant | seeds | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(titles),
    ]
    for row in rows:
        cells = []
        for title in titles:
            cell = row[title]
            if cell["mean"] is None:
                cells.append("—")
            elif title.endswith(" s") or title == "best epoch":
                cells.append(f"{cell['mean']:.1f} ± {cell['sd']:.1f}")
            else:
                cells.append(f"{cell['mean']:.3f} ± {cell['sd']:.3f}")
        lines.append(f"| {row['variant']} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_experiment(
    config: ExperimentConfig, output_dir: str | Path, *, source: str = "experiment", reporter: Reporter | None = None
) -> list[dict[str, Any]]:
    """Run every (variant, seed); write ``results.json`` and ``results.md`` after each run.

    Writing after each run means a long experiment that is stopped still leaves
    a table of what finished.
    """
    reporter = reporter or LogReporter()
    output_dir = Path(output_dir)
    runs = config.runs(source=source)
    records: list[RunRecord] = []
    rows: list[dict[str, Any]] = []
    for number, (variant, seed, run_config) in enumerate(runs, start=1):
        logger.info("run %d/%d: %s seed %d", number, len(runs), variant, seed)
        bundle_dir = output_dir / variant / f"seed{seed}"
        result = train_run(run_config, bundle_dir, reporter=reporter)
        timing = dict(result.timing)
        best_epochs = [m["best_epoch"] for m in result.training.get("members", []) if m.get("best_epoch")]
        if best_epochs:  # iterative models: the epoch each reached its best dev score (mean over members)
            timing["best_epoch"] = statistics.fmean(best_epochs)
        records.append(RunRecord(variant, seed, str(bundle_dir), result.metrics, timing))
        rows = summarise(records)
        atomic_write_json(
            output_dir / "results.json",
            {
                "experiment": config.model_dump(mode="json"),
                "summary": rows,
                "runs": [r.__dict__ for r in records],
            },
        )
        atomic_write_text(output_dir / "results.md", render_markdown(config.name, rows))
    return rows
