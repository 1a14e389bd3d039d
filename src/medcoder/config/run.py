"""Run and experiment configs: what ``medcoder train`` and ``medcoder experiment`` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from medcoder.config.base import Strict, deep_merge, read_config_file, validate
from medcoder.config.data import DataConfig, LabelConfig, TaskConfig
from medcoder.config.models import DEFAULT_MODEL_TYPE, ModelConfig, TfidfLrConfig
from medcoder.errors import ConfigError


class ThresholdConfig(Strict):
    """Decision thresholds, tuned on dev only."""

    strategy: Literal["global", "per_label"] = "global"


class RunConfig(Strict):
    """One training run: data -> label space -> model -> thresholds -> metrics.

    A ``model`` mapping without ``type`` means the default model, so
    ``model: {C: 10}`` tunes the default instead of failing.
    """

    name: str = "run"
    seed: int = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    model: ModelConfig = Field(default_factory=TfidfLrConfig)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _default_model_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" not in value:
            return {"type": DEFAULT_MODEL_TYPE, **value}
        return value


class Variant(Strict):
    """One row of an experiment: a name and overrides deep-merged into ``base``."""

    # The name becomes a folder under the experiment's output: no separators, no "..".
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    overrides: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(Strict):
    """Several runs (variants x seeds) summarised in one results table."""

    name: str = "experiment"
    base: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # Also report, for each variant, the ensemble that averages its seed models' scores
    # (thresholds tuned on dev again): a Γ-seed ensemble without training anything more.
    seed_ensemble: bool = False

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds must be unique, repeated: {', '.join(map(str, repeated))}")
        return value

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, value: list[Variant]) -> list[Variant]:
        names = [v.name for v in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(duplicates)}")
        return value

    def runs(self, *, source: str = "experiment") -> list[tuple[str, int, RunConfig]]:
        """Expand to ``(variant name, seed, RunConfig)``; every run validated up front."""
        expanded = []
        for variant in self.variants:
            merged = deep_merge(self.base, variant.overrides)
            for seed in self.seeds:
                raw = deep_merge(merged, {"seed": seed, "name": f"{variant.name}-seed{seed}"})
                expanded.append(
                    (variant.name, seed, validate(RunConfig, raw, source=f"{source}: variant {variant.name!r}"))
                )
        return expanded


_STAGE_COMMANDS = {"adapt_domain": "medcoder adapt-domain", "retrieval": "medcoder retrieval"}


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file."""
    raw = read_config_file(path)
    stage = raw.get("stage") if isinstance(raw, dict) else None
    if isinstance(stage, str) and stage in _STAGE_COMMANDS:  # another command's config: say which
        raise ConfigError(f"{path}: this is a '{stage}' config, not a training run; use `{_STAGE_COMMANDS[stage]}`")
    return validate(RunConfig, raw, source=str(path))


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment config file (every run is validated too)."""
    config = validate(ExperimentConfig, read_config_file(path), source=str(path))
    config.runs(source=str(path))
    return config
