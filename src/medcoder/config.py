"""Typed configuration: the only home of defaults.

Every config is a frozen pydantic model that forbids unknown keys, so a
misspelt key is an error naming the key instead of a silently ignored value.
``load_run_config``/``load_experiment_config`` read YAML (or JSON) files and
turn validation failures into one-line ``ConfigError`` messages.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcoder.errors import ConfigError, InputError
from medcoder.io import read_text_file


class Strict(BaseModel):
    """Base for all configs: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- data sources
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


# ----------------------------------------------------------------- label space
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


# ---------------------------------------------------------------------- models
class TfidfLrConfig(Strict):
    """TF-IDF features + one-vs-rest (or multinomial) logistic regression."""

    type: Literal["tfidf_lr.v1"] = "tfidf_lr.v1"
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = Field(2, ge=1)
    max_df: float = Field(1.0, gt=0.0, le=1.0)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    C: float = Field(100.0, gt=0.0)
    class_weight: Literal["balanced"] | None = None
    max_iter: int = Field(1000, ge=1)
    n_jobs: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ngram_order(self) -> TfidfLrConfig:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError("ngram_range must be (low, high) with 1 <= low <= high")
        return self


class TrainConfig(Strict):
    """The one training loop shared by every torch model."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(5.0, gt=0.0)
    # auto: bf16 where the hardware has it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32; fp16: CUDA only
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # None: "map" for multi-label tasks, "accuracy" for single-label ones
    early_stopping_metric: Literal["map", "micro_f1", "loss", "accuracy"] | None = None
    early_stopping_patience: int = Field(5, ge=1)
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: a checkpoint at the end of every epoch only
    length_bucketing: bool = True
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: all cores


class WordEncodingConfig(Strict):
    """Word-level input of the CNN/RNN coders."""

    max_tokens: int = Field(2500, ge=1)  # truncate notes to the first N tokens
    min_count: int = Field(2, ge=1)  # vocabulary: words seen at least this often in train
    max_vocab: int | None = Field(None, ge=2)
    lowercase: bool = True
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # share of tokens removed at train time


class Word2VecConfig(Strict):
    """In-domain word2vec (gensim) trained before the coder."""

    algorithm: Literal["cbow", "skipgram"] = "cbow"
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)
    corpus: str | None = None  # unlabeled JSONL ("text" field) used in addition to the training notes


class EmbeddingConfig(Strict):
    """Word embeddings: random, trained word2vec, or a .vec/.txt/.bin file a user brings."""

    init: Literal["random", "word2vec", "file"] = "random"
    dim: int = Field(100, ge=1)
    path: str | None = None
    word2vec: Word2VecConfig = Field(default_factory=Word2VecConfig)
    freeze: bool = False

    @model_validator(mode="after")
    def _path_for_files(self) -> EmbeddingConfig:
        if (self.init == "file") != (self.path is not None):
            raise ValueError("path is required by, and only allowed with, init: file")
        return self


class TransferConfig(Strict):
    """Source task -> target task: reuse a trained TextCNN's embeddings (EM) and convolutions (CV)."""

    source: str  # a TextCNN model directory trained on the source task
    embeddings: Literal["frozen", "tuned"] = "frozen"
    convolutions: Literal["frozen", "tuned", "dual"] = "tuned"  # dual: a tuned copy beside a frozen copy
    adaptation_dim: int = Field(256, ge=1)  # the new layer between source features and the new output


class NeuralCoderConfig(Strict):
    """Fields shared by every word-level torch coder."""

    encoding: WordEncodingConfig = Field(default_factory=WordEncodingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ensemble: int = Field(1, ge=1)  # seeds seed..seed+ensemble-1; predictions are their mean
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    transfer: TransferConfig | None = None

    @model_validator(mode="after")
    def _transfer_only_for_textcnn(self) -> NeuralCoderConfig:
        if self.transfer is not None and self.type != "textcnn.v1":  # type: ignore[attr-defined]
            raise ValueError("transfer is implemented for textcnn.v1 targets only")
        return self


class TextCnnConfig(NeuralCoderConfig):
    """Kim (2014): parallel convolutions, max-over-time pooling, linear output."""

    type: Literal["textcnn.v1"] = "textcnn.v1"
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = Field(100, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class CamlConfig(NeuralCoderConfig):
    """Mullenbach et al. (2018): one convolution + per-label attention."""

    type: Literal["caml.v1"] = "caml.v1"
    kernel_size: int = Field(10, ge=1)
    num_filters: int = Field(50, ge=1)


class DrCamlConfig(CamlConfig):
    """CAML + the code-description regulariser (descriptions from the label space's catalog)."""

    type: Literal["drcaml.v1"] = "drcaml.v1"  # type: ignore[assignment]
    description_weight: float = Field(0.01, ge=0.0)
    description_max_tokens: int = Field(30, ge=1)


class MultiResCnnConfig(NeuralCoderConfig):
    """Li & Yu (2020): multi-filter residual convolutions + per-label attention."""

    type: Literal["multirescnn.v1"] = "multirescnn.v1"
    filter_sizes: tuple[int, ...] = (3, 5, 9, 15, 19, 25)
    num_filters: int = Field(50, ge=1)


class BiGruConfig(NeuralCoderConfig):
    """Bidirectional GRU with a pooled or label-wise attention output."""

    type: Literal["bigru.v1"] = "bigru.v1"
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    output: Literal["pooled", "label_attention"] = "label_attention"


ModelConfig = Annotated[
    TfidfLrConfig | TextCnnConfig | CamlConfig | DrCamlConfig | MultiResCnnConfig | BiGruConfig,
    Field(discriminator="type"),
]


class ThresholdConfig(Strict):
    """Decision thresholds, tuned on dev only."""

    strategy: Literal["global", "per_label"] = "global"


DEFAULT_MODEL_TYPE = "tfidf_lr.v1"


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
                expanded.append((variant.name, seed, validate(RunConfig, raw, source=f"{source}: variant {variant.name!r}")))
        return expanded


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``overrides`` into a copy of ``base`` (dicts merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


T = TypeVar("T", bound=BaseModel)


# Values of the ``kind``/``type`` fields that select a member of a tagged union.
_TAGS = frozenset(
    cls.model_fields[key].default
    for cls in (
        SyntheticSource,
        JsonlSource,
        CsvSource,
        Mimic3Source,
        Mimic4Source,
        CodiespSource,
        TfidfLrConfig,
        TextCnnConfig,
        CamlConfig,
        DrCamlConfig,
        MultiResCnnConfig,
        BiGruConfig,
    )
    for key in ("kind", "type")
    if key in cls.model_fields
)


def _readable_location(loc: tuple[Any, ...], raw: Any) -> str:
    """Join an error location, dropping the discriminator tags pydantic inserts.

    For a tagged union pydantic reports ``data.source.jsonl.path``; the user
    wrote ``data.source.path``, so a location element that is not a key of the
    raw mapping but is a union tag is skipped.
    """
    parts: list[str] = []
    node = raw
    for element in loc:
        if isinstance(node, dict) and element not in node and element in _TAGS:
            continue
        parts.append(str(element))
        if isinstance(node, dict):
            node = node.get(element)
        elif isinstance(node, list) and isinstance(element, int) and element < len(node):
            node = node[element]
        else:
            node = None
    return ".".join(parts)


def _format_validation_error(exc: ValidationError, raw: Any) -> str:
    parts = []
    for err in exc.errors():
        loc = _readable_location(err["loc"], raw)
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        elif err["type"] == "missing":
            parts.append(f"missing required key {loc!r}")
        elif err["type"] == "union_tag_not_found":
            tag = err["ctx"]["discriminator"].strip("'")
            parts.append(f"missing required key {loc + '.' + tag!r}")
        elif err["type"] == "union_tag_invalid":
            ctx = err["ctx"]
            tag = ctx["discriminator"].strip("'")
            parts.append(f"{loc}.{tag}: unknown value {ctx['tag']!r} (expected one of {ctx['expected_tags']})")
        else:
            parts.append(f"{loc or 'config'}: {err['msg']}")
    return "; ".join(parts)


def validate(model: type[T], raw: Any, *, source: str) -> T:
    """Validate ``raw`` against ``model``; raise ``ConfigError`` naming ``source`` and the keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_validation_error(exc, raw)}") from None


def read_config_file(path: str | Path) -> Any:
    """Parse a YAML or JSON config file; syntax errors name the file and line."""
    text = read_text_file(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"malformed YAML: {problem}", path=path, line=line) from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file."""
    return validate(RunConfig, read_config_file(path), source=str(path))


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment config file (every run is validated too)."""
    config = validate(ExperimentConfig, read_config_file(path), source=str(path))
    config.runs(source=str(path))
    return config


def dump_yaml(config: BaseModel) -> str:
    """Serialise a config to YAML (round-trips through ``validate``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
