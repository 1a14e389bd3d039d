"""One run end to end: data -> label space -> model -> dev calibration -> dev thresholds -> test metrics -> bundle.

Calibration (multi-label tasks) and thresholds are fitted on the dev split and
applied unchanged to test; the test split is never used to choose anything.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.bundles import TrainedSystem, check_bundle_target
from medcoder.config import RunConfig
from medcoder.data.dataset import fit_label_space, load_dataset, texts_of
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.evaluation.report import format_metrics_table
from medcoder.evaluation.scoring import calibrate_splits, score_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.model import ModelCoder
from medcoder.models import build_model
from medcoder.models.base import CodingModel, DevSet
from medcoder.models.bundle import Bundle
from medcoder.progress import LogReporter, Reporter

logger = logging.getLogger(__name__)


def score_split(model: CodingModel, notes: list[Note]) -> np.ndarray:
    """Model scores ``[n_docs, n_labels]`` for ``notes``."""
    texts, pairs = texts_of(notes)
    return model.predict_scores(texts, pairs=pairs)


def _join_launch() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` without a launcher, else it joins the process group.

    Under torchrun / accelerate launch every rank trains; only rank 0 evaluates and saves.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1  # no launcher: no torch import needed (a TF-IDF run never imports torch)
    from medcoder.engine.distributed import init_from_env

    world = init_from_env()
    return world.rank, world.size


@dataclass
class RunResult:
    """What a run produced."""

    bundle_dir: Path
    metrics: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    label_report: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # the model's training_report()
    written: bool = True  # False on the ranks other than 0 of a launch: they trained, rank 0 saved the bundle


def train_run(config: RunConfig, output_dir: str | Path, *, reporter: Reporter | None = None) -> RunResult:
    """Train, tune thresholds on dev, evaluate on test and save a bundle to ``output_dir``."""
    reporter = reporter or LogReporter()
    check_bundle_target(output_dir)
    rank, world_size = _join_launch()  # joins the process group when started by torchrun / accelerate launch
    timing: dict[str, float] = {}
    start = time.perf_counter()
    with reporter.task("reading data"):
        splits = load_dataset(config.data)
    timing["load_data"] = time.perf_counter() - start

    task = config.task.type
    single = task in ("multiclass", "pair")
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    labels = fit_label_space(config.labels, task, train)
    if len(labels) < 2:
        raise MedcoderError(f"the label space has {len(labels)} label(s) after filtering; need at least 2")
    keep = [i for i, note in enumerate(train) if not single or labels.map_labels(note.labels)[0] in labels.index]
    train = [train[i] for i in keep]
    y_train = labels.transform([note.labels for note in train])
    logger.info("label space: %d labels from %d training notes", len(labels), len(train))

    model = build_model(
        config.model,
        n_labels=len(labels),
        task=task,
        seed=config.seed,
        label_descriptions=labels.descriptions(),
        label_codes=labels.codes,
        label_system=labels.system,
    )
    texts, pairs = texts_of(train)
    dev_texts, dev_pairs = texts_of(dev)
    dev_set = DevSet(dev_texts, labels.transform([note.labels for note in dev]), dev_pairs)
    # Checkpoints live beside the bundle: running the same command again after a
    # crash resumes there; they are removed once the bundle is saved.
    work_dir = Path(f"{output_dir}.checkpoints")
    start = time.perf_counter()
    with reporter.task(f"training {config.model.type}", total=len(labels)) as update:
        spans = [[(s.start, s.end) for s in note.spans] for note in train] if any(n.spans for n in train) else None
        model.fit(texts, y_train, pairs=pairs, dev=dev_set, work_dir=work_dir, progress=update, spans=spans)
    timing["train"] = time.perf_counter() - start
    if rank != 0:  # under torchrun every rank trained the same model; rank 0 evaluates and saves it
        return RunResult(Path(output_dir), {}, timing, labels.report, model.training_report(), written=False)

    start = time.perf_counter()
    with reporter.task("scoring dev and test"):
        dev_scores = score_split(model, dev)
        test_scores = score_split(model, test)
    timing["predict_dev_test"] = time.perf_counter() - start
    timing["predict_per_doc_ms"] = 1000.0 * timing["predict_dev_test"] / (len(dev) + len(test))

    thresholds, calibrator, calibration = None, None, None
    if not single:
        start = time.perf_counter()
        with reporter.task("calibrating on dev"):
            test_y = labels.transform([note.labels for note in test])
            calibrator, dev_scores, test_scores, calibration = calibrate_splits(
                config.calibration, dev_scores, dev_set.y, test_scores, test_y, seed=config.seed
            )
        timing["calibrate"] = time.perf_counter() - start
        thresholds = Thresholds.tune(dev_set.y, dev_scores, config.thresholds.strategy)  # calibrated units
    metrics: dict[str, Any] = {
        "dev": score_notes(dev_scores, dev, labels, thresholds),
        "test": score_notes(test_scores, test, labels, thresholds),
    }
    if calibration is not None:
        metrics["calibration"] = calibration
    info = {
        "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "test_coverage": labels.coverage([note.labels for note in test]),
        "label_report": labels.report,
        "timing": timing,
        "training": model.training_report(),
        "world_size": world_size,  # processes that trained the model together (torchrun / accelerate launch)
    }
    bundle_dir = ModelCoder(Bundle(config, labels, model, thresholds, metrics, info, calibrator)).save(output_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
    return RunResult(Path(bundle_dir), metrics, timing, labels.report, info["training"])


def train_model(config: RunConfig, output: Path, *, reporter: Reporter, source: str = "") -> TrainedSystem:
    """``medcoder train`` on a ``kind: train`` config: :func:`train_run`, then its test figures as Markdown."""
    result = train_run(config, output, reporter=reporter)
    report = format_metrics_table(result.metrics["test"]) if result.written else ""
    return TrainedSystem(result.bundle_dir, report, written=result.written)
