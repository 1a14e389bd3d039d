"""The parts saved systems are built from: one layout, one writer and one reader for each.

Every kind of saved system (``inference/model.py``, ``retrieval.py``, ``rerank.py``) saves and loads itself
from these parts, so a part looks the same wherever it appears:

==================  ==========================================================================
the folder          :func:`new_bundle`: written whole or not at all, never over a folder that is not a bundle
``config.json``     :func:`write_header`: format, kind, what the kind records, ``info`` (created, versions)
``thresholds.json`` :func:`write_thresholds` / :func:`read_thresholds`: the dev-tuned decision rule
``calibration.json`` :func:`write_calibration` / :func:`read_calibration`: the calibrator fitted on dev
``metrics.json``    :func:`write_metrics` / :func:`read_metrics`: the run's dev/test figures
``retrieval/``      :class:`RetrievalPart`: ``encoder/`` (sentence-transformers) + ``index/`` (its catalog
                    vectors), recorded as ``{"encoder", "index", "encoder_fingerprint"}``
nested bundles      :func:`nest_bundle`: a whole saved system inside another (a classifier, a base model)
==================  ==========================================================================

Every JSON file carries its ``format``; files written before a format key existed (the reranker's
calibration.json, metrics.json) still load. Paths inside a bundle are relative, so it can be moved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from medcoder.bundles import bundle_header, check_bundle_target, inside, library_versions
from medcoder.errors import BundleError, MedcoderError
from medcoder.evaluation.calibration import CALIBRATION_FORMAT, Calibrator
from medcoder.evaluation.thresholds import Thresholds
from medcoder.io import atomic_directory, atomic_write_json, link_or_copy_tree, read_json_file

THRESHOLDS_FORMAT = "medcoder.thresholds.v1"
METRICS_FORMAT = "medcoder.metrics.v1"


def _object(path: Path) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _body(path: Path, expected: str, *, optional_format: bool = False) -> dict[str, Any]:
    """The file's object without its ``format`` key, which must be ``expected`` (or absent: ``optional_format``)."""
    raw = _object(path)
    found = raw.get("format")
    if found != expected and not (optional_format and found is None):
        raise BundleError(f"{path}: format is {found!r}, expected {expected!r}")
    return {key: value for key, value in raw.items() if key != "format"}


def required_file(bundle: Path, name: str, what: str) -> Path:
    """``bundle / name``, which must exist."""
    path = bundle / name
    if not path.is_file():
        raise BundleError(f"{bundle}: {what} ({name}) is missing")
    return path


@contextlib.contextmanager
def new_bundle(path: str | Path) -> Iterator[Path]:
    """The folder to write a bundle's parts into: a temporary sibling of ``path``, swapped in whole at the end.

    Refused up front when ``path`` holds anything but nothing, an empty folder or an older bundle.
    """
    check_bundle_target(path)
    with atomic_directory(path) as tmp:
        yield tmp


# ------------------------------------------------------------------ config.json
def write_header(folder: Path, kind: str, body: dict[str, Any], *, requires: Iterable[str] = ()) -> dict[str, Any]:
    """Write ``config.json`` (format, kind, ``body``, ``info``: created and library versions); returns it.

    ``body["info"]`` (what the run recorded) is kept and completed.
    """
    info = {
        **body.get("info", {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(requires),
    }
    header = {**bundle_header(kind), **body, "info": info}
    atomic_write_json(folder / "config.json", header)
    return header


# ------------------------------------------------------------------ thresholds.json
def write_thresholds(folder: Path, thresholds: Thresholds | None) -> None:
    """``thresholds.json``: the tuned thresholds, or the argmax rule of a single-label model (None)."""
    if thresholds is None:
        decision: dict[str, Any] = {"format": THRESHOLDS_FORMAT, "decision": "argmax"}
    else:
        decision = {"format": THRESHOLDS_FORMAT, "decision": "threshold", **thresholds.to_dict()}
    atomic_write_json(folder / "thresholds.json", decision)


def read_thresholds(bundle: Path, *, n_labels: int) -> Thresholds | None:
    path = required_file(bundle, "thresholds.json", "its decision rule")
    raw = _body(path, THRESHOLDS_FORMAT)
    decision = raw.pop("decision", None)
    if decision == "argmax":
        return None
    if decision != "threshold":
        raise BundleError(f"{path}: decision must be 'threshold' or 'argmax', got {decision!r}")
    try:
        thresholds = Thresholds.from_dict(raw)
    except MedcoderError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if thresholds.per_label is not None and len(thresholds.per_label) != n_labels:
        raise BundleError(f"{path}: {len(thresholds.per_label)} per-label thresholds for {n_labels} labels")
    return thresholds


# ------------------------------------------------------------------ calibration.json
def write_calibration(folder: Path, calibrator: Calibrator) -> None:
    atomic_write_json(folder / "calibration.json", {"format": CALIBRATION_FORMAT, **calibrator.to_dict()})


def read_calibration(bundle: Path, *, required: bool = False, single: bool = False) -> Calibrator | None:
    """The calibrator of ``bundle``; None where it has none (``required``: an error instead).

    ``single``: a single-label model's, which must be ``none`` (its decision is the argmax).
    """
    path = bundle / "calibration.json"
    if not path.is_file():
        if required:
            raise BundleError(f"{bundle}: its calibration (calibration.json) is missing")
        return None
    # the reranker wrote its calibrator without a format key before one file had one layout
    raw = _body(path, CALIBRATION_FORMAT, optional_format=True)
    try:
        calibrator = Calibrator.from_dict(raw, source=str(path))
    except MedcoderError as exc:
        raise BundleError(str(exc)) from None
    if single and calibrator.method != "none":
        raise BundleError(f"{path}: a single-label model's probabilities are not calibrated (its decision is argmax)")
    return calibrator


# ------------------------------------------------------------------ metrics.json
def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    atomic_write_json(folder / "metrics.json", {"format": METRICS_FORMAT, **metrics})


def read_metrics(bundle: Path) -> dict[str, Any]:
    """The run's figures (``{"dev", "test", "calibration"}`` of a model); metrics.json had no format key before."""
    return _body(required_file(bundle, "metrics.json", "its figures"), METRICS_FORMAT, optional_format=True)


# ------------------------------------------------------------------ the sentence encoder + its catalog index
class RetrievalRecord(BaseModel):
    """How ``config.json`` names a retrieval part: its two folders and the encoder the vectors came from."""

    encoder: str
    index: str
    encoder_fingerprint: str | None = None


@dataclass
class RetrievalPart:
    """A sentence encoder and the catalog index embedded with it (``retrieval/encoder/``, ``retrieval/index/``)."""

    encoder: Any  # medcoder.retrieval.biencoder.BiEncoder
    index: Any  # medcoder.retrieval.index.CodeIndex

    FOLDER = "retrieval"

    @staticmethod
    def write(folder: Path, encoder: Any, index: Any, index_dir: Path | None = None) -> dict[str, Any]:
        """Copy the part into ``folder/retrieval`` (hard links where the disk allows); returns its record.

        ``encoder``: a BiEncoder (its source folder is copied; one loaded from a hub id is saved);
        ``index_dir``: the index's folder when it is on disk (a cache), else ``index`` is saved.
        """
        target = folder / RetrievalPart.FOLDER
        if Path(encoder.source).is_dir():
            link_or_copy_tree(encoder.source, target / "encoder")
        else:  # a hub id: save a copy
            encoder.save(target / "encoder")
        if index_dir is not None and (index_dir / "index.json").is_file():
            link_or_copy_tree(index_dir, target / "index")
        else:
            index.save(target / "index")
        return RetrievalRecord(
            encoder=f"{RetrievalPart.FOLDER}/encoder",
            index=f"{RetrievalPart.FOLDER}/index",
            encoder_fingerprint=index.meta.get("encoder_fingerprint"),
        ).model_dump()

    @classmethod
    def read(cls, bundle: Path, record: RetrievalRecord, *, max_seq_length: int) -> RetrievalPart:
        """Open the part ``record`` names; the index must have been embedded by that encoder."""
        from medcoder.retrieval.biencoder import BiEncoder
        from medcoder.retrieval.index import CodeIndex

        encoder = BiEncoder.load(
            str(inside(bundle, record.encoder, "its sentence encoder")), max_seq_length=max_seq_length
        )
        index_dir = inside(bundle, record.index, "its catalog index")
        index = CodeIndex.load(index_dir)
        if index.meta.get("encoder_fingerprint") != record.encoder_fingerprint:
            raise BundleError(
                f"{index_dir}: this index was not built by the bundle's encoder; copy the whole folder again"
            )
        return cls(encoder, index)


# ------------------------------------------------------------------ nested bundles
def nest_bundle(source: Path, folder: Path, relative: str) -> str:
    """Copy the saved system ``source`` into ``folder/relative`` (hard links where possible); returns ``relative``."""
    link_or_copy_tree(source, folder / relative)
    return relative
