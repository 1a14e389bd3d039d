"""Data configs: where notes come from, how they split, how codes become labels, the task type."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from medcoder.config.base import Strict


class SyntheticSource(Strict):
    """Synthetic ICD-10-CM notes generated on the fly (the demo dataset)."""

    kind: Literal["synthetic"] = "synthetic"
    n_notes: int = Field(600, ge=20)
    n_codes: int = Field(60, ge=2)
    seed: int = 0


class JsonlSource(Strict):
    """One JSON object per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: str
    id_field: str = "id"
    text_field: str = "text"
    labels_field: str = "labels"
    split_field: str = "split"
    text_pair_field: str | None = None


class CsvSource(Strict):
    """A CSV file with configurable column names; labels joined by a separator."""

    kind: Literal["csv"] = "csv"
    path: str
    id_column: str = "id"
    text_column: str = "text"
    labels_column: str = "labels"
    split_column: str | None = None
    text_pair_column: str | None = None
    label_separator: str = ";"
    delimiter: str = ","


class Mimic3Source(Strict):
    """MIMIC-III v1.4 CSVs (NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD)."""

    kind: Literal["mimic3"] = "mimic3"
    root: str
    label_set: Literal["full", "50"] = "full"
    include_procedures: bool = True
    splits_dir: str | None = None


class Mimic4Source(Strict):
    """MIMIC-IV hosp/ + note/ modules."""

    kind: Literal["mimic4"] = "mimic4"
    root: str
    note_root: str | None = None
    icd_version: Literal[9, 10] | None = None
    include_procedures: bool = True
    splits_dir: str | None = None


class CodiespSource(Strict):
    """The official CodiEsp release folder (train/dev/test with text_files[_en])."""

    kind: Literal["codiesp"] = "codiesp"
    root: str
    subtask: Literal["D", "P"] = "D"
    language: Literal["en", "es"] = "en"


Source = Annotated[
    SyntheticSource | JsonlSource | CsvSource | Mimic3Source | Mimic4Source | CodiespSource,
    Field(discriminator="kind"),
]


class DataConfig(Strict):
    """Where notes come from and how they are split when the source has no split."""

    source: Source = Field(default_factory=SyntheticSource)
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

    system: Literal["none", "icd10cm", "icd9cm"] = "none"
    level: Literal["full", "category", "block", "chapter"] = "full"
    truncate: bool = False
    min_freq: int = Field(1, ge=1)
    top_k: int | None = Field(None, ge=1)


class TaskConfig(Strict):
    """multilabel: codes (sigmoid). multiclass: one class (softmax). pair: one class for a text pair."""

    type: Literal["multilabel", "multiclass", "pair"] = "multilabel"
