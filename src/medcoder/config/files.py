"""One loader for every command's config file, chosen by the file's ``kind``.

A config file may declare what it is for (``kind: train | experiment |
adapt_domain | retrieval``); a file without ``kind`` is taken to be of the kind
the command expects. Given to the wrong command, a file says which command
reads it instead of failing on its keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcoder.config.adapt_domain import AdaptDomainConfig
from medcoder.config.base import Strict, read_config_file, validate
from medcoder.config.rerank import RerankConfig
from medcoder.config.retrieval import RetrievalConfig
from medcoder.config.run import ExperimentConfig, RunConfig
from medcoder.errors import ConfigError

TOP_LEVEL: tuple[type[Strict], ...] = (RunConfig, ExperimentConfig, AdaptDomainConfig, RetrievalConfig, RerankConfig)


def config_kinds() -> dict[str, type[Strict]]:
    """``{kind: config class}`` of the config files the commands read."""
    return {cls.model_fields["kind"].default: cls for cls in TOP_LEVEL}


def load_config(path: str | Path, kind: str | tuple[str, ...]) -> Any:
    """Read and validate the ``kind`` config at ``path`` (an experiment's runs are validated too).

    ``kind`` may list several kinds a command reads (``medcoder train`` reads ``train`` and
    ``rerank``): the file's declared kind picks one, a file without ``kind`` is the first.
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
