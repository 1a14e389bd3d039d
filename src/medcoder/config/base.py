"""Config machinery: the strict base class, YAML reading, validation with readable errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medcoder.errors import ConfigError, InputError
from medcoder.io import read_text_file


class Strict(BaseModel):
    """Base for all configs: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _union_tags() -> frozenset[str]:
    """Values of the ``kind``/``type`` fields that select a member of a tagged union.

    Collected from every config class (all subclass :class:`Strict`), so a new
    source or model type needs no registration here.
    """
    tags: set[str] = set()
    stack = list(Strict.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        for key in ("kind", "type"):
            field = cls.model_fields.get(key)
            if field is not None and isinstance(field.default, str):
                tags.add(field.default)
    return frozenset(tags)


def _readable_location(loc: tuple[Any, ...], raw: Any) -> str:
    """Join an error location, dropping the discriminator tags pydantic inserts.

    For a tagged union pydantic reports ``data.source.jsonl.path``; the user
    wrote ``data.source.path``, so a location element that is not a key of the
    raw mapping but is a union tag is skipped.
    """
    parts: list[str] = []
    node = raw
    for element in loc:
        if isinstance(node, dict) and element not in node and element in _union_tags():
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


def dump_yaml(config: BaseModel) -> str:
    """Serialise a config to YAML (round-trips through ``validate``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
