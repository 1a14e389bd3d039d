"""The folder format every saved system shares: ``config.json`` states the format and the system's kind.

A bundle is a folder holding ``config.json`` (``{"format": "medcoder.bundle.v2",
"kind": ..., ...}``) and whatever files its kind needs, referred to by paths
relative to the folder, so a bundle copied to another machine or renamed still
loads. ``medcoder.load`` reads the kind and hands the folder to the system
registered under it (:data:`medcoder.registry.SYSTEMS`). Bundles are written
into a temporary sibling and swapped in whole (:func:`medcoder.io.atomic_directory`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medcoder.errors import BundleError, MedcoderError
from medcoder.io import read_json_file, recover_directory
from medcoder.version import __version__

BUNDLE_FORMAT = "medcoder.bundle.v2"
# v1 (medcoder 0.1) had no "kind": every v1 bundle is a single model
READABLE_FORMATS = ("medcoder.bundle.v1", BUNDLE_FORMAT)
_ALWAYS = ("numpy", "pydantic", "safetensors")


@dataclass(frozen=True)
class TrainedSystem:
    """What a saved system's trainer returns to ``medcoder train``."""

    path: Path  # the bundle written
    report: str  # Markdown shown at the end of the command (the test figures)
    written: bool = True  # False: a rank other than 0 under torchrun (rank 0 writes the bundle and reports)
    what: str = "model"  # how the command names it: "model written to ..."


def library_versions(distributions: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, medcoder and the distributions a bundle needs (always numpy, pydantic, safetensors)."""
    versions = {"python": platform.python_version(), "medcoder": __version__}
    for name in dict.fromkeys([*_ALWAYS, *distributions]):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# renderings of the bundle (they show its identity, so they cannot be part of it), written after it is complete
RENDERINGS = frozenset({"README.md", "results.md", "report.html"})


def bundle_identity(path: str | Path | None, *, header: dict[str, Any] | None = None) -> str:
    """SHA-256 (hex) of a saved system: its config.json and every other file's relative path and bytes.

    The renderings (:data:`RENDERINGS`: the model card, results.md, report.html) are left out: they
    show the identity and may be written later. Paths are relative, so a moved or copied bundle keeps
    its identity. ``path`` None: a system built in memory, identified by its ``header`` alone.
    """
    digest = hashlib.sha256()
    if path is None:
        digest.update(json.dumps(header or {}, sort_keys=True, default=str).encode())
        return digest.hexdigest()
    folder = Path(path)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in RENDERINGS)
    for file in files:
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def bundle_header(kind: str) -> dict[str, Any]:
    """The keys every ``config.json`` starts with."""
    return {"format": BUNDLE_FORMAT, "kind": kind}


def read_header(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of the bundle folder ``path`` (``kind`` filled in for v1 bundles); clear errors otherwise."""
    path = Path(path)
    recover_directory(path, marker="config.json", clean=False)  # reading: a save may be under way beside it
    if not path.is_dir():
        raise BundleError(f"{path}: not a model directory (expected a folder holding config.json)")
    config_file = path / "config.json"
    if not config_file.is_file():
        if (path / "retrieval.json").is_file():
            raise BundleError(
                f"{path}: a retrieval folder of medcoder 0.1 (retrieval.json, no config.json); "
                "run `medcoder retrieval` again to make a loadable retrieval bundle"
            )
        raise BundleError(f"{path}: no config.json, so this is not a medcoder model directory")
    raw = read_json_file(config_file)
    if not isinstance(raw, dict):
        raise BundleError(f"{config_file}: expected a JSON object")
    if raw.get("format") not in READABLE_FORMATS:
        raise BundleError(f"{config_file}: format is {raw.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    kind = raw.setdefault("kind", "model")
    if not isinstance(kind, str):
        raise BundleError(f"{config_file}: 'kind' must be a string, got {kind!r}")
    return raw


def inside(bundle: Path, relative: str, what: str) -> Path:
    """``bundle / relative`` for a folder the bundle's config.json names; it must lie inside the bundle and exist."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise BundleError(f"{bundle / 'config.json'}: {what} must be a folder inside the bundle, got {relative!r}")
    folder = bundle / relative
    if not folder.is_dir():
        raise BundleError(f"{bundle}: {what} ({relative}/) is missing")
    return folder


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose config.json is a medcoder bundle header."""
    try:
        read_header(path)
    except MedcoderError:
        return False
    return True


def check_bundle_target(path: str | Path) -> None:
    """Refuse to write a bundle over anything but nothing, an empty folder or an older bundle.

    Saving replaces the whole directory, so a folder holding other files (a
    project, a folder of runs) must never be a target. Called before training
    too, so a long run does not end in this error.
    """
    path = Path(path)
    recover_directory(path, marker="config.json")
    if not path.exists():
        return
    if not path.is_dir():
        raise MedcoderError(f"{path}: exists and is not a directory")
    if not any(path.iterdir()) or is_bundle(path):
        return
    raise MedcoderError(
        f"{path}: folder exists and is not a medcoder model; refusing to replace it (choose a new or empty folder)"
    )
