"""Typed configuration: the only home of defaults.

Every config is a frozen pydantic model that forbids unknown keys, so a
misspelt key is an error naming the key instead of a silently ignored value.
:func:`load_config` reads a command's YAML (or JSON) file and turns validation
failures into one-line ``ConfigError`` messages.

``base`` holds the machinery; ``run``, ``adapt_domain`` and ``retrieval`` the
configs the commands read (``files`` loads them); ``data`` and ``train`` the sections
they share. A model's or a data source's own section is declared by that model
or source, beside its code, and registered with it (``medcoder.registry``).
"""

from medcoder.config.base import Strict, deep_merge, dump_yaml, read_config_file, registered_section, validate
from medcoder.config.data import DataConfig, LabelConfig, TaskConfig
from medcoder.config.files import config_kinds, load_config
from medcoder.config.run import DEFAULT_MODEL_TYPE, ExperimentConfig, RunConfig, ThresholdConfig, Variant
from medcoder.config.train import TrainConfig

__all__ = [
    "DEFAULT_MODEL_TYPE",
    "DataConfig",
    "ExperimentConfig",
    "LabelConfig",
    "RunConfig",
    "Strict",
    "TaskConfig",
    "ThresholdConfig",
    "TrainConfig",
    "Variant",
    "config_kinds",
    "deep_merge",
    "dump_yaml",
    "load_config",
    "read_config_file",
    "registered_section",
    "validate",
]
