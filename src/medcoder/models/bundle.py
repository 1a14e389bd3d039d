"""A trained model and how it was made: what the saved system of kind ``model`` holds.

:class:`medcoder.inference.model.ModelCoder` saves and loads the bundle folder (its layout is documented
there); this module holds the parts a lower layer needs too: the :class:`Bundle` record, the run config a
saved model was made from (older configs upgraded) and the model itself (:func:`read_model`: a TextCNN
trained on a source task is read as a transfer source this way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcoder.bundles import read_header
from medcoder.config import RunConfig, validate
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError
from medcoder.evaluation.calibration import Calibrator
from medcoder.evaluation.thresholds import Thresholds
from medcoder.models.base import CodingModel, load_model
from medcoder.registry import MODELS


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


def read_model(path: str | Path, *, header: dict[str, Any] | None = None) -> tuple[RunConfig, LabelSpace, CodingModel]:
    """(run config, label space, trained model) of the model bundle at ``path``: no decision rule or calibration."""
    path = Path(path)
    config, _ = saved_run_config(path, header=header)
    if not (path / "labels.json").is_file():
        raise BundleError(f"{path}: missing labels.json")
    labels = LabelSpace.from_json(path / "labels.json")
    model_cls = MODELS.get(config.model.type)
    for name in model_cls.weight_files:
        if not (path / name).is_file():
            raise BundleError(f"{path}: missing {name} (needed by model {config.model.type!r})")
    return config, labels, load_model(path, config.model, n_labels=len(labels), task=config.task.type)
