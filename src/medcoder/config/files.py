"""One loader for every command's config file, chosen by the file's ``kind``.

A config file may declare what it is for (``kind: train | rerank | retrieval |
experiment | adapt_domain``); a file without ``kind`` is taken to be of the kind
the command expects. Given to the wrong command, a file says which command
reads it instead of failing on its keys. The kinds that train a saved system
come from the system registry (each kind registers its training config); the
others are the configs of commands that write no saved system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcoder.config.adapt_domain import AdaptDomainConfig
from medcoder.config.base import Strict, read_config_file, validate
from medcoder.config.run import ExperimentConfig
from medcoder.errors import ConfigError
from medcoder.registry import SYSTEMS

# the commands whose configs write no saved system (a saved system's config comes with its registered kind)
NOT_SYSTEMS: tuple[type[Strict], ...] = (ExperimentConfig, AdaptDomainConfig)


def trained_kinds() -> dict[str, str]:
    """``{config file kind: saved-system kind}`` of the configs ``medcoder train`` reads (``train`` -> ``model``)."""
    return {entry.config.model_fields["kind"].default: entry.name for entry in SYSTEMS.entries() if entry.config}


def config_kinds() -> dict[str, type[Strict]]:
    """``{kind: config class}`` of the config files the commands read."""
    kinds = {cls.model_fields["kind"].default: cls for cls in NOT_SYSTEMS}
    return kinds | {kind: SYSTEMS.config_class(system) for kind, system in trained_kinds().items()}


def load_config(path: str | Path, kind: str | tuple[str, ...]) -> Any:
    """Read and validate the ``kind`` config at ``path`` (an experiment's runs are validated too).

    ``kind`` may list several kinds a command reads (``medcoder train`` reads every kind of
    :func:`trained_kinds`): the file's declared kind picks one, a file without ``kind`` is the first.
    """
    kinds = config_kinds()
    accepted = (kind,) if isinstance(kind, str) else kind
    unknown = [k for k in accepted if k not in kinds]
    if unknown:
        raise ValueError(f"unknown config kind {unknown[0]!r}")
    raw = read_config_file(path)
    if isinstance(raw, dict) and "stage" in raw and "kind" not in raw:
        raw = {("kind" if key == "stage" else key): value for key, value in raw.items()}  # medcoder 0.1 spelling
    declared = raw.get("kind") if isinstance(raw, dict) else None
    kind = declared if isinstance(declared, str) and declared in accepted else accepted[0]
    if isinstance(declared, str) and declared != kind and declared in kinds:
        raise ConfigError(
            f"{path}: this is a '{declared}' config, not a '{kind}' one; use `{kinds[declared].command}`"  # type: ignore[attr-defined]
        )
    config = validate(kinds[kind], raw, source=str(path))
    if isinstance(config, ExperimentConfig):
        config.runs(source=str(path))
    return config
