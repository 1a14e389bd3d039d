"""Data configs: how notes split, how codes become labels, the task type.

Where notes come from is a data source, chosen by ``data.source.kind`` from
the source registry: each source (``medcoder.data.sources``) declares its own
config class, defaults included, and reads its notes from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medcoder.config.base import Strict, registered_section
from medcoder.registry import SOURCES

Source = registered_section(SOURCES)


def _default_source() -> Any:
    return SOURCES.config_class("synthetic")()


class DataConfig(Strict):
    """Where notes come from and how they are split when the source has no split."""

    source: Source = Field(default_factory=_default_source)
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    split_file: str | None = None

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r <= 0 for r in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("split_ratios must be three positive numbers summing to 1")
        return value


class LabelConfig(Strict):
    """How raw codes become the label space (fitted on train only)."""

    system: Literal["none", "icd10cm", "icd10pcs", "icd9cm"] = "none"
    level: Literal["full", "category", "block", "chapter"] = "full"
    truncate: bool = False
    min_freq: int = Field(1, ge=1)
    top_k: int | None = Field(None, ge=1)
    # seen_categories: the label space also holds every catalog code (ICD-10-CM) of the categories the
    # train split codes, up to catalog_code_length characters without the dot (4: "M48.3"), so a model can
    # score codes no training note carries (their descriptions, or a knowledge task, teach them)
    catalog_codes: Literal["none", "seen_categories"] = "none"
    catalog_code_length: int = Field(4, ge=3, le=7)

    @model_validator(mode="after")
    def _levels_need_a_hierarchy(self) -> LabelConfig:
        if self.level != "full" and self.system == "none":
            raise ValueError(f"level {self.level!r} needs an ICD system (system 'none' has no hierarchy)")
        if self.catalog_codes != "none" and (self.system != "icd10cm" or self.level != "full"):
            raise ValueError(
                "catalog_codes needs system icd10cm at level full (the catalog lists full ICD-10-CM codes)"
            )
        return self


class TaskConfig(Strict):
    """multilabel: codes (sigmoid). multiclass: one class (softmax). pair: one class for a text pair."""

    type: Literal["multilabel", "multiclass", "pair"] = "multilabel"
