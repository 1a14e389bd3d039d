"""Typed configuration: the only home of defaults.

Every config is a frozen pydantic model that forbids unknown keys, so a
misspelt key is an error naming the key instead of a silently ignored value.
``load_run_config``/``load_experiment_config`` read YAML (or JSON) files and
turn validation failures into one-line ``ConfigError`` messages.

``base`` holds the machinery, ``data``, ``models`` and ``run`` the configs.
"""

from medcoder.config.base import Strict, deep_merge, dump_yaml, read_config_file, validate
from medcoder.config.data import (
    CodiespSource,
    CsvSource,
    DataConfig,
    JsonlSource,
    LabelConfig,
    Mimic3Source,
    Mimic4Source,
    Source,
    SyntheticSource,
    TaskConfig,
)
from medcoder.config.models import (
    DEFAULT_MODEL_TYPE,
    AuxiliaryTasksConfig,
    BiGruConfig,
    CamlConfig,
    DrCamlConfig,
    EmbeddingConfig,
    ModelConfig,
    MultiResCnnConfig,
    NeuralCoderConfig,
    TextCnnConfig,
    TfidfLrConfig,
    TrainConfig,
    TransferConfig,
    TransformerCoderConfig,
    Word2VecConfig,
    WordEncodingConfig,
)
from medcoder.config.run import (
    ExperimentConfig,
    RunConfig,
    ThresholdConfig,
    Variant,
    load_experiment_config,
    load_run_config,
)

__all__ = [
    "DEFAULT_MODEL_TYPE",
    "AuxiliaryTasksConfig",
    "BiGruConfig",
    "TransformerCoderConfig",
    "CamlConfig",
    "CodiespSource",
    "CsvSource",
    "DataConfig",
    "DrCamlConfig",
    "EmbeddingConfig",
    "ExperimentConfig",
    "JsonlSource",
    "LabelConfig",
    "Mimic3Source",
    "Mimic4Source",
    "ModelConfig",
    "MultiResCnnConfig",
    "NeuralCoderConfig",
    "RunConfig",
    "Source",
    "Strict",
    "SyntheticSource",
    "TaskConfig",
    "TextCnnConfig",
    "TfidfLrConfig",
    "ThresholdConfig",
    "TrainConfig",
    "TransferConfig",
    "Variant",
    "Word2VecConfig",
    "WordEncodingConfig",
    "deep_merge",
    "dump_yaml",
    "load_experiment_config",
    "load_run_config",
    "read_config_file",
    "validate",
]
