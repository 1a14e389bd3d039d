"""Run and experiment configs: what ``medcoder train`` and ``medcoder experiment`` read."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from medcoder.config.base import Strict, deep_merge, registered_section, validate
from medcoder.config.data import DataConfig, LabelConfig, TaskConfig
from medcoder.registry import MODELS

DEFAULT_MODEL_TYPE = "tfidf_lr.v1"

# The ``model:`` section: any registered model type; a section without ``type`` is the default model,
# so ``model: {C: 10}`` tunes the default instead of failing.
ModelConfig = registered_section(MODELS, default=DEFAULT_MODEL_TYPE)


def _default_model() -> Any:
    return MODELS.config_class(DEFAULT_MODEL_TYPE)()


class ThresholdConfig(Strict):
    """Decision thresholds, tuned on dev only."""

    strategy: Literal["global", "per_label"] = "global"


# Multi-label tasks: map the scores to calibrated probabilities, fitted on dev's top-20 codes per note before
# the thresholds are tuned. "auto" picks the method with the lowest cross-validated ECE@20 on dev.
Calibration = Literal["auto", "none", "temperature", "platt", "isotonic"]


class CoderRunConfig(Strict):
    """The sections every ``medcoder train`` config of a coder of labelled notes begins with (in this order);
    each kind sets its own ``kind`` and ``name`` defaults and adds what it trains."""

    command: ClassVar[str] = "medcoder train"

    kind: str
    name: str
    seed: int = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)


class RunConfig(CoderRunConfig):
    """One training run (``medcoder train``): data -> label space -> model -> thresholds -> metrics."""

    kind: Literal["train"] = "train"
    name: str = "run"
    model: ModelConfig = Field(default_factory=_default_model)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    calibration: Calibration = "auto"


class Variant(Strict):
    """One row of an experiment: a name and overrides deep-merged into ``base``."""

    # The name becomes a folder under the experiment's output: no separators, no "..".
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    overrides: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(Strict):
    """Several runs (variants x seeds) summarised in one results table (``medcoder experiment``)."""

    command: ClassVar[str] = "medcoder experiment"

    kind: Literal["experiment"] = "experiment"
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
