"""One run end to end: data -> label space -> model -> dev thresholds -> test metrics -> bundle.

Thresholds are tuned on the dev split and applied unchanged to test; the test
split is never used to choose anything.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.config import DataConfig, RunConfig
from medcoder.data.labels import LabelSpace
from medcoder.data.records import SPLITS, Note
from medcoder.data.sources import load_notes
from medcoder.data.splits import apply_splits
from medcoder.data.synthetic import SyntheticConfig, generate_notes
from medcoder.errors import MedcoderError
from medcoder.evaluation.scoring import evaluate_multiclass, evaluate_multilabel
from medcoder.evaluation.thresholds import Thresholds
from medcoder.models import build_model
from medcoder.models.base import DevSet
from medcoder.models.bundle import Bundle, check_bundle_target, save_bundle
from medcoder.progress import LogReporter, Reporter
from medcoder.training.distributed import init_from_env

logger = logging.getLogger(__name__)


def load_dataset(data: DataConfig) -> dict[str, list[Note]]:
    """Read the configured source and return notes grouped by train/dev/test."""
    source = data.source
    if source.kind == "synthetic":
        notes = generate_notes(SyntheticConfig(n_notes=source.n_notes, n_codes=source.n_codes, seed=source.seed))
    else:
        options = source.model_dump(exclude={"kind"})
        location = options.pop("path", None) or options.pop("root")
        notes = load_notes(source.kind, location, **options)
    notes = apply_splits(notes, split_file=data.split_file, ratios=data.split_ratios, seed=data.split_seed)
    groups: dict[str, list[Note]] = {split: [] for split in SPLITS}
    for note in notes:
        if note.split in groups:
            groups[note.split].append(note)
    empty = [split for split in SPLITS if not groups[split]]
    if empty:
        raise MedcoderError(f"data source {source.kind!r} has no notes in split(s): {', '.join(empty)}")
    return groups


def texts_of(notes: list[Note]) -> tuple[list[str], list[str] | None]:
    """Texts and, for sentence pairs, second texts of ``notes``."""
    pairs = [note.text_pair or "" for note in notes] if any(n.text_pair is not None for n in notes) else None
    return [note.text for note in notes], pairs


def score_split(bundle_or_model: Any, notes: list[Note]) -> np.ndarray:
    """Model scores ``[n_docs, n_labels]`` for ``notes``."""
    texts, pairs = texts_of(notes)
    return bundle_or_model.predict_scores(texts, pairs=pairs)


def evaluate_scores(
    scores: np.ndarray, notes: list[Note], labels: LabelSpace, thresholds: Thresholds | None
) -> dict[str, Any]:
    """Metrics of ``scores`` against the notes' gold labels, mapped into the label space's system."""
    gold = [labels.map_labels(note.labels) for note in notes]
    if thresholds is None:
        return evaluate_multiclass([g[0] if g else "" for g in gold], scores, labels.codes)
    return evaluate_multilabel(gold, scores, labels.codes, thresholds, labels.train_freq)


def fit_label_space(config: RunConfig, train: list[Note]) -> LabelSpace:
    """The label space ``config.labels`` describes, fitted on the training notes only."""
    return LabelSpace.fit(
        [note.labels for note in train],
        system=config.labels.system,
        level=config.labels.level,
        truncate=config.labels.truncate,
        min_freq=config.labels.min_freq,
        top_k=config.labels.top_k,
        task="multilabel" if config.task.type == "multilabel" else "multiclass",
    )


@dataclass
class RunResult:
    """What a run produced."""

    bundle_dir: Path
    metrics: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    label_report: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # the model's training_report()


def train_run(config: RunConfig, output_dir: str | Path, *, reporter: Reporter | None = None) -> RunResult:
    """Train, tune thresholds on dev, evaluate on test and save a bundle to ``output_dir``."""
    reporter = reporter or LogReporter()
    check_bundle_target(output_dir)
    world = init_from_env()  # a process group when started by torchrun / accelerate launch
    timing: dict[str, float] = {}
    start = time.perf_counter()
    with reporter.task("reading data"):
        splits = load_dataset(config.data)
    timing["load_data"] = time.perf_counter() - start

    task = config.task.type
    single = task in ("multiclass", "pair")
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    labels = fit_label_space(config, train)
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
    if not world.is_main:  # under torchrun every rank trained the same model; rank 0 evaluates and saves it
        return RunResult(Path(output_dir), {}, timing, labels.report, model.training_report())

    start = time.perf_counter()
    with reporter.task("scoring dev and test"):
        dev_scores = score_split(model, dev)
        test_scores = score_split(model, test)
    timing["predict_dev_test"] = time.perf_counter() - start
    timing["predict_per_doc_ms"] = 1000.0 * timing["predict_dev_test"] / (len(dev) + len(test))

    thresholds = None
    if not single:
        thresholds = Thresholds.tune(dev_set.y, dev_scores, config.thresholds.strategy)
    metrics = {
        "dev": evaluate_scores(dev_scores, dev, labels, thresholds),
        "test": evaluate_scores(test_scores, test, labels, thresholds),
    }
    info = {
        "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "test_coverage": labels.coverage([note.labels for note in test]),
        "label_report": labels.report,
        "timing": timing,
        "training": model.training_report(),
    }
    bundle_dir = save_bundle(Bundle(config, labels, model, thresholds, metrics, info), output_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
    return RunResult(Path(bundle_dir), metrics, timing, labels.report, info["training"])
