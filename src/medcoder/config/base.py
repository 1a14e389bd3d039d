"""Config machinery: the strict base class, registry-chosen sections, YAML reading, readable errors."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    SerializeAsAny,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError, core_schema

from medcoder.errors import ConfigError, InputError
from medcoder.io import read_text_file
from medcoder.registry import Registry, UnknownName


class Strict(BaseModel):
    """Base for all configs: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


PathText = Annotated[str, BeforeValidator(_fspath)]
"""A file or folder path in a config: a string in YAML, a ``str`` or ``Path`` from Python."""


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``overrides`` into a copy of ``base`` (dicts merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _RegistrySchema:
    """JSON schema of a registry-chosen section: one of the config classes registered now."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> Any:
        choices = [handler(entry.config.__pydantic_core_schema__) for entry in self.registry.entries() if entry.config]
        return {"oneOf": choices, "description": f"a {self.registry.kind}, chosen by its {self.registry.tag!r}"}


def registered_section(registry: Registry, *, default: str | None = None) -> Any:
    """The type of a config section whose ``registry.tag`` key picks a config class from ``registry``.

    The union of allowed sections is the registry itself, read when a config
    is validated: a component registered after this module was imported is
    accepted as well as a built-in one. ``default`` is the name a section
    without the tag key gets (``model: {C: 10}`` tunes the default model).
    """
    tag = registry.tag

    def choose(value: Any, handler: Any) -> Any:
        del handler  # the chosen class validates the section itself
        if isinstance(value, Strict) and isinstance(getattr(value, tag, None), str):
            if type(value) is registry.config_class(getattr(value, tag)):
                return value
            value = value.model_dump()
        if not isinstance(value, dict):
            raise PydanticCustomError("section_type", "expected a mapping with a {tag} key", {"tag": repr(tag)})
        name = value.get(tag, default)
        if name is None:
            raise PydanticCustomError("union_tag_not_found", "no {discriminator}", {"discriminator": repr(tag)})
        try:
            config_class = registry.config_class(name) if isinstance(name, str) else None
        except UnknownName:
            config_class = None
        if config_class is None:
            raise PydanticCustomError(
                "union_tag_invalid",
                "unknown {discriminator} {tag}",
                {"discriminator": repr(tag), "tag": name, "expected_tags": ", ".join(map(repr, registry.names()))},
            )
        return config_class.model_validate({**value, tag: name})

    return Annotated[SerializeAsAny[Strict], WrapValidator(choose), _RegistrySchema(registry)]


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(element) for element in err["loc"])
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
            message = err["msg"].removeprefix("Value error, ")  # our validators' own words, without pydantic's tag
            parts.append(f"{loc or 'config'}: {message}")
    return "; ".join(parts)


T = TypeVar("T", bound=BaseModel)


def validate(model: type[T], raw: Any, *, source: str) -> T:
    """Validate ``raw`` against ``model``; raise ``ConfigError`` naming ``source`` and the keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_validation_error(exc)}") from None


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


def dump_yaml(config: BaseModel) -> str:
    """Serialise a config to YAML (round-trips through ``validate``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
