"""Several runs (variants x seeds) summarised in one results table (Markdown + JSON).

Running the same experiment again into the same folder reuses every finished
run whose bundle was made from exactly the same run config, so a stopped
experiment continues where it was and a changed variant is the only one
trained again. With ``seed_ensemble: true`` each variant also gets a row for
the ensemble of its seed models (mean of their raw scores, calibrated and thresholds tuned on dev).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.config import ExperimentConfig, RunConfig
from medcoder.data.dataset import load_dataset
from medcoder.errors import MedcoderError
from medcoder.evaluation.report import render_experiment_table
from medcoder.evaluation.scoring import calibrate_splits, score_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.model import ModelCoder
from medcoder.inference.parts import read_metrics
from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.models.bundle import saved_run_config
from medcoder.progress import LogReporter, Reporter
from medcoder.training.run import score_split, train_run

logger = logging.getLogger(__name__)

# (column title, path into a run's metrics/timing) — the headline figures of METRICS.md
MULTILABEL_COLUMNS = (
    ("dev MAP", ("dev", "all_gold", "map")),
    ("MAP", ("test", "all_gold", "map")),
    ("micro-F1", ("test", "all_gold", "micro_f1")),
    ("macro-F1", ("test", "all_gold", "macro_f1")),
    ("macro-F1 (gold)", ("test", "all_gold", "macro_f1_with_gold")),
    ("micro-AUC", ("test", "all_gold", "micro_auc")),
    ("P@8", ("test", "all_gold", "p_at_8")),
    ("unseen MAP", ("test", "all_gold", "unseen_gold", "map")),
    ("unseen R@10", ("test", "all_gold", "unseen_gold", "recall_at_10")),
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
    members: tuple[int, ...] = ()  # a seed ensemble: the seeds whose models it averages


def _lookup(record: RunRecord, path: tuple[str, ...]) -> float | None:
    node: Any = {"test": record.metrics.get("test", {}), "dev": record.metrics.get("dev", {}), "timing": record.timing}
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
        ensemble = bool(runs[0].members)
        seeds = list(runs[0].members) if ensemble else [r.seed for r in runs]
        row: dict[str, Any] = {"variant": variant, "n_seeds": len(seeds), "seeds": seeds, "ensemble": ensemble}
        for title, path in columns:
            values = [v for v in (_lookup(r, path) for r in runs) if v is not None]
            row[title] = {
                "mean": statistics.fmean(values) if values else None,
                # one model (the ensemble) has no spread over seeds: sd None, shown without "±"
                "sd": None if ensemble else statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "values": values,
            }
        rows.append(row)
    return rows


def _best_epoch(timing: dict[str, float], training: dict[str, Any]) -> dict[str, float]:
    timing = dict(timing)
    best_epochs = [m["best_epoch"] for m in training.get("members", []) if m.get("best_epoch")]
    if best_epochs:  # iterative models: the epoch each reached its best dev score (mean over members)
        timing["best_epoch"] = statistics.fmean(best_epochs)
    return timing


def finished_run(variant: str, bundle_dir: Path, run_config: RunConfig) -> RunRecord | None:
    """The record of a model bundle already in ``bundle_dir`` made from exactly ``run_config``, else None.

    The saved config is read as the current code reads it (defaults of new options filled in), so a
    bundle of an older medcoder whose run is unchanged is reused too.
    """
    try:
        saved, header = saved_run_config(bundle_dir)
        metrics = read_metrics(bundle_dir)
    except (MedcoderError, OSError):
        return None
    if saved != run_config or not isinstance(metrics, dict):
        return None
    if "all_gold" in metrics.get("test", {}) and "calibration" not in metrics and run_config.calibration != "none":
        return None  # a multi-label model from before calibration: its figures are not this config's
    info = header.get("info") or {}
    timing = _best_epoch(info.get("timing", {}), info.get("training", {}))
    return RunRecord(variant, run_config.seed, str(bundle_dir), metrics, timing)


def seed_ensemble(variant: str, records: list[RunRecord], run_config: RunConfig, reporter: Reporter) -> RunRecord:
    """One model averaging the dev and test scores of ``records``' bundles (their models' raw scores, before each
    bundle's own calibration); calibration and thresholds fitted on dev again."""
    with reporter.task(f"{variant}: ensemble of {len(records)} seed models"):
        splits = load_dataset(run_config.data)
        bundles = [ModelCoder.open(r.bundle_dir).bundle for r in records]
        labels = bundles[0].labels
        if any(b.labels.codes != labels.codes for b in bundles[1:]):
            raise MedcoderError(f"variant {variant!r}: the seed models have different label spaces; cannot ensemble")
        dev, test = splits["dev"], splits["test"]
        dev_scores = np.mean([score_split(b.model, dev) for b in bundles], axis=0)
        test_scores = np.mean([score_split(b.model, test) for b in bundles], axis=0)
    thresholds, calibration = None, None
    if bundles[0].thresholds is not None:  # the mean of the members' raw scores, calibrated on dev as a run is
        y_dev = labels.transform([note.labels for note in dev])
        y_test = labels.transform([note.labels for note in test])
        _, dev_scores, test_scores, calibration = calibrate_splits(
            run_config.calibration, dev_scores, y_dev, test_scores, y_test, seed=run_config.seed
        )
        thresholds = Thresholds.tune(y_dev, dev_scores, run_config.thresholds.strategy)
    metrics: dict[str, Any] = {
        "dev": score_notes(dev_scores, dev, labels, thresholds),
        "test": score_notes(test_scores, test, labels, thresholds),
    }
    if calibration is not None:
        metrics["calibration"] = calibration
    timing = {"train": sum(r.timing.get("train", 0.0) for r in records)}
    epochs = [r.timing["best_epoch"] for r in records if "best_epoch" in r.timing]
    if epochs:
        timing["best_epoch"] = statistics.fmean(epochs)
    name = f"{variant} (ensemble of {len(records)} seeds)"  # a space: never a variant's own name
    return RunRecord(name, -1, "", metrics, timing, tuple(r.seed for r in records))


def run_experiment(
    config: ExperimentConfig,
    output_dir: str | Path,
    *,
    source: str = "experiment",
    reporter: Reporter | None = None,
    reuse: bool = True,
) -> list[dict[str, Any]]:
    """Run every (variant, seed); write ``results.json`` and ``results.md`` after each run.

    Writing after each run means a long experiment that is stopped still leaves
    a table of what finished. With ``reuse`` a finished bundle of the same run
    config in the output folder is read instead of trained again.
    """
    reporter = reporter or LogReporter()
    output_dir = Path(output_dir)
    runs = config.runs(source=source)
    records: list[RunRecord] = []
    rows: list[dict[str, Any]] = []
    for number, (variant, seed, run_config) in enumerate(runs, start=1):
        bundle_dir = output_dir / variant / f"seed{seed}"
        record = finished_run(variant, bundle_dir, run_config) if reuse else None
        if record is not None:
            logger.info(
                "run %d/%d: %s seed %d already finished with this config; reusing %s",
                number,
                len(runs),
                variant,
                seed,
                bundle_dir,
            )
        else:
            logger.info("run %d/%d: %s seed %d", number, len(runs), variant, seed)
            result = train_run(run_config, bundle_dir, reporter=reporter)
            record = RunRecord(
                variant, seed, str(bundle_dir), result.metrics, _best_epoch(result.timing, result.training)
            )
        records.append(record)
        last_of_variant = number == len(runs) or runs[number][0] != variant
        if config.seed_ensemble and last_of_variant and len(config.seeds) > 1:
            members = [r for r in records if r.variant == variant and not r.members]
            records.append(seed_ensemble(variant, members, run_config, reporter))
        rows = summarise(records)
        atomic_write_json(
            output_dir / "results.json",
            {
                "experiment": config.model_dump(mode="json"),
                "summary": rows,
                "runs": [r.__dict__ for r in records if not r.members],
                "ensembles": [r.__dict__ for r in records if r.members],
            },
        )
        atomic_write_text(output_dir / "results.md", render_experiment_table(config.name, rows))
    return rows
