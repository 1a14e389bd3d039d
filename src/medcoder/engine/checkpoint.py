"""Training checkpoints as a folder of safetensors + JSON (never pickle).

Layout of ``CHECKPOINT_DIR/last`` (format ``medcoder.checkpoint.v1``)::

    state.json              format, run fingerprint + description, loop state,
                            LR schedule, optimizer hyper-parameters and scalar
                            state, python/numpy RNG states
    model.safetensors       the model's state dict
    best.safetensors        the best epoch's weights (absent: the model is the best)
    optimizer.safetensors   optimizer state tensors, keyed ``state.{param index}.{name}``
    rng.safetensors         torch CPU RNG (``torch``) and CUDA RNGs (``cuda.{device}``)

The folder is built beside ``last`` and swapped in (``atomic_directory``), so a
crash or ``kill -9`` leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medcoder.errors import MedcoderError
from medcoder.io import atomic_directory, read_json_file, recover_directory

CHECKPOINT_FORMAT = "medcoder.checkpoint.v1"
LAST = "last"
_TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]  # a torch optimizer state dict
    schedule: dict[str, Any]
    loop: dict[str, Any]
    rng: dict[str, Any]  # see capture_rng()


def fingerprint(run: dict[str, Any]) -> str:
    """A stable hash of a run description (JSON-serialisable)."""
    text = json.dumps(run, sort_keys=True, ensure_ascii=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state.items()}


# ------------------------------------------------------------------------ RNG
def capture_rng() -> dict[str, Any]:
    """The states of python ``random``, numpy's global RNG, torch CPU and CUDA RNGs."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "tensors": tensors,
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo ``capture_rng``: every RNG continues exactly where it was captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = state["tensors"]
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ optimizer
def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state dict -> (tensors for safetensors, the rest as JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    # JSON turned tuples into lists; torch's optimizers expect betas as a tuple.
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else dict(g) for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- save / load
def save_checkpoint(
    path: Path,
    *,
    run: dict[str, Any],
    model: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    optimizer: dict[str, Any],
    schedule: dict[str, Any],
    loop: dict[str, Any],
    rng: dict[str, Any],
) -> None:
    """Write a checkpoint folder at ``path``, replacing any previous one atomically."""
    optimizer_tensors, optimizer_meta = _split_optimizer_state(optimizer)
    state = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint(run),
        "run": run,
        "loop": loop,
        "schedule": schedule,
        "optimizer": optimizer_meta,
        "rng": {"python": rng["python"], "numpy": rng["numpy"]},
    }
    with atomic_directory(path) as tmp:
        files = {
            "model.safetensors": cpu_copy(model),
            "optimizer.safetensors": optimizer_tensors,
            "rng.safetensors": {k: v.contiguous() for k, v in rng["tensors"].items()},
        }
        if best is not None:
            files["best.safetensors"] = cpu_copy(best)
        for name, tensors in files.items():
            save_file(tensors, str(tmp / name))
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_folder(tmp)


def _fsync_folder(folder: Path) -> None:
    # The swap is only as durable as the files it publishes.
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def find_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint to resume from in ``checkpoint_dir``, or None.

    Also clears what an interrupted save leaves behind: a half-built
    ``.last.*.tmp`` folder is deleted; a complete ``.last.*.old`` (a crash
    between the two renames of the swap) is put back as ``last``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    last = checkpoint_dir / LAST
    recover_directory(last, marker="state.json")
    return last if last.exists() else None


def load_checkpoint(path: Path, run: dict[str, Any]) -> Checkpoint:
    """Read the checkpoint at ``path``; refuse one written by a different ``run``."""
    path = Path(path)
    missing = [n for n in ("state.json", *_TENSOR_FILES) if not (path / n).is_file()]
    if missing:
        raise MedcoderError(f"{path}: not a complete training checkpoint (missing {', '.join(missing)})")
    state = read_json_file(path / "state.json")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MedcoderError(f"{path}: not a {CHECKPOINT_FORMAT} training checkpoint")
    if state.get("fingerprint") != fingerprint(run):
        differ = ", ".join(_differences(state.get("run", {}), run)) or "run description"
        raise MedcoderError(
            f"{path}: checkpoint belongs to another run ({differ} differ); "
            "delete it or use another checkpoint folder to start afresh"
        )
    try:
        tensors = {name: load_file(str(path / name)) for name in _TENSOR_FILES}
        best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise MedcoderError(f"{path}: unreadable checkpoint tensors ({exc})") from None
    rng = {**state["rng"], "tensors": tensors["rng.safetensors"]}
    return Checkpoint(
        model=tensors["model.safetensors"],
        best=best,
        optimizer=_join_optimizer_state(tensors["optimizer.safetensors"], state["optimizer"]),
        schedule=state["schedule"],
        loop=state["loop"],
        rng=rng,
    )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the entries where two run descriptions differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if json.dumps(old, sort_keys=True, default=repr) == json.dumps(new, sort_keys=True, default=repr):
        return []
    return [prefix.rstrip(".")]
