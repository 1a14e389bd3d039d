"""A trained model as a self-describing directory: the bundle of kind ``model``.

Layout (``medcoder.bundle.v2``, kind ``model``; v1 bundles load too)::

    config.json        format, kind, the run config, task, versions, training info
    labels.json        the label space (codes, train frequencies, descriptions)
    thresholds.json    decision rule tuned on dev (threshold(s) or argmax)
    calibration.json   multi-label models: the calibrator fitted on dev (absent in older bundles: none)
    metrics.json       dev/test metrics of the run (and the calibration's ECE@20 before/after)
    README.md          the model card
    model.safetensors  weights (+ model-specific JSON such as vocab.json)

A bundle is written into a temporary sibling directory and renamed into place,
so a crash never leaves a half-written bundle and an old one survives until
the new one is complete. Loading reads only JSON and safetensors and refuses
any directory whose ``config.json`` is not of this format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medcoder.bundles import bundle_header, check_bundle_target, library_versions, read_header
from medcoder.config import RunConfig, validate
from medcoder.data.icd import CATALOG_PACKAGES
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError, MedcoderError
from medcoder.evaluation.calibration import CALIBRATION_FORMAT, Calibrator
from medcoder.evaluation.report import render_model_card
from medcoder.evaluation.thresholds import Thresholds
from medcoder.io import atomic_directory, atomic_write_json, atomic_write_text, read_json_file
from medcoder.models.base import CodingModel, load_model
from medcoder.registry import MODELS

THRESHOLDS_FORMAT = "medcoder.thresholds.v1"


@dataclass
class Bundle:
    """Everything needed to code new notes, plus how the model was made."""

    config: RunConfig
    labels: LabelSpace
    model: CodingModel
    thresholds: Thresholds | None  # None: single-label task, decision is argmax
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # maps the model's scores to the probabilities the thresholds apply to; None: the scores as they are
    calibrator: Calibrator | None = None

    @property
    def task(self) -> str:
        return self.config.task.type


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write ``bundle`` to directory ``path`` atomically; returns the path.

    An older bundle at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    check_bundle_target(path)
    catalog = CATALOG_PACKAGES.get(bundle.labels.system)  # it named the codes and gave their descriptions
    info = {
        **bundle.info,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions([*bundle.model.requires, *([catalog] if catalog else [])]),
    }
    with atomic_directory(path) as tmp:
        atomic_write_json(
            tmp / "config.json",
            {**bundle_header("model"), "run": bundle.config.model_dump(mode="json"), "info": info},
        )
        bundle.labels.to_json(tmp / "labels.json")
        if bundle.thresholds is None:
            decision: dict[str, Any] = {"format": THRESHOLDS_FORMAT, "decision": "argmax"}
        else:
            decision = {"format": THRESHOLDS_FORMAT, "decision": "threshold", **bundle.thresholds.to_dict()}
        atomic_write_json(tmp / "thresholds.json", decision)
        if bundle.calibrator is not None:
            atomic_write_json(tmp / "calibration.json", {"format": CALIBRATION_FORMAT, **bundle.calibrator.to_dict()})
        atomic_write_json(tmp / "metrics.json", bundle.metrics)
        bundle.model.save(tmp)
        atomic_write_text(tmp / "README.md", render_model_card(bundle.config, bundle.labels, bundle.metrics, info))
    bundle.info = info
    return path


def _read_object(path: Path) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _upgrade_run(run: Any, bundle_format: str) -> Any:
    """An older run config in today's shape: medcoder 0.1 (``medcoder.bundle.v1``) word-level models carried
    ``transfer: null`` (only ``textcnn.v1`` has ``transfer`` now); a transfer TextCNN saved before
    ``transfer.vocabulary`` existed used the source vocabulary (today's default is ``merged``)."""
    model = run.get("model") if isinstance(run, dict) else None
    transfer = model.get("transfer") if isinstance(model, dict) else None
    if isinstance(transfer, dict) and "vocabulary" not in transfer:
        return {**run, "model": {**model, "transfer": {**transfer, "vocabulary": "source"}}}
    if bundle_format != "medcoder.bundle.v1" or not isinstance(model, dict) or model.get("type") == "textcnn.v1":
        return run
    if "transfer" in model and model["transfer"] is None:
        return {**run, "model": {key: value for key, value in model.items() if key != "transfer"}}
    return run


def saved_run_config(path: str | Path, *, header: dict[str, Any] | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """(the run config the model bundle at ``path`` was made from, its config.json); ``BundleError`` if not one.

    ``header``: the folder's config.json as :func:`~medcoder.bundles.read_header` returned it, when read already.
    """
    path = Path(path)
    raw = header if header is not None else read_header(path)
    if raw["kind"] != "model":
        raise BundleError(f"{path}: a saved {raw['kind']} system, not a single model (open it with medcoder.load)")
    run = _upgrade_run(raw.get("run"), raw["format"])
    return validate(RunConfig, run, source=str(path / "config.json")), raw


def load_bundle(path: str | Path, *, header: dict[str, Any] | None = None) -> Bundle:
    """Load a bundle directory written by :func:`save_bundle` (``header``: its config.json, when read already)."""
    path = Path(path)
    config, raw = saved_run_config(path, header=header)
    for name in ("labels.json", "thresholds.json", "metrics.json"):
        if not (path / name).is_file():
            raise BundleError(f"{path}: missing {name}")
    labels = LabelSpace.from_json(path / "labels.json")
    thresholds = _load_thresholds(path / "thresholds.json", n_labels=len(labels))
    if (thresholds is None) != (config.task.type in ("multiclass", "pair")):
        raise BundleError(f"{path / 'thresholds.json'}: decision rule does not match task {config.task.type!r}")
    model_cls = MODELS.get(config.model.type)
    for name in model_cls.weight_files:
        if not (path / name).is_file():
            raise BundleError(f"{path}: missing {name} (needed by model {config.model.type!r})")
    calibrator = _load_calibrator(path / "calibration.json", single=thresholds is None)
    model = load_model(path, config.model, n_labels=len(labels), task=config.task.type)
    metrics = _read_object(path / "metrics.json")
    return Bundle(config, labels, model, thresholds, metrics, raw.get("info", {}), calibrator)


def _load_calibrator(path: Path, *, single: bool) -> Calibrator | None:
    """The calibrator in ``path``; None where the bundle has none (older bundles, single-label tasks)."""
    if not path.is_file():
        return None
    raw = _read_object(path)
    if raw.get("format") != CALIBRATION_FORMAT:
        raise BundleError(f"{path}: format is {raw.get('format')!r}, expected {CALIBRATION_FORMAT!r}")
    try:
        calibrator = Calibrator.from_dict({k: v for k, v in raw.items() if k != "format"}, source=str(path))
    except MedcoderError as exc:
        raise BundleError(str(exc)) from None
    if single and calibrator.method != "none":
        raise BundleError(f"{path}: a single-label model's probabilities are not calibrated (its decision is argmax)")
    return calibrator


def _load_thresholds(path: Path, *, n_labels: int) -> Thresholds | None:
    raw = _read_object(path)
    if raw.get("format") != THRESHOLDS_FORMAT:
        raise BundleError(f"{path}: format is {raw.get('format')!r}, expected {THRESHOLDS_FORMAT!r}")
    decision = raw.get("decision")
    if decision == "argmax":
        return None
    if decision != "threshold":
        raise BundleError(f"{path}: decision must be 'threshold' or 'argmax', got {decision!r}")
    body = {k: v for k, v in raw.items() if k not in ("format", "decision")}
    try:
        thresholds = Thresholds.from_dict(body)
    except MedcoderError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if thresholds.per_label is not None and len(thresholds.per_label) != n_labels:
        raise BundleError(f"{path}: {len(thresholds.per_label)} per-label thresholds for {n_labels} labels")
    return thresholds
