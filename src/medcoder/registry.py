"""Registries: the one extension point for each kind of component.

A registry maps a name ("tfidf_lr.v1", "jsonl") to what implements it and the
config class that validates its section of a config file. Components register
themselves with a decorator where they are defined::

    @MODELS.register("textcnn.v1", config=TextCnnConfig)
    class TextCnnCoder(WordCoder): ...

Nothing else keeps a list of names: config validation, ``medcoder.load``, the
JSON schema and the conformance tests all ask the registry.

A saved-system kind is registered with the config of the file that trains it
and its trainer, so ``medcoder train`` dispatches through the registry::

    @SYSTEMS.register("rerank", config=RerankConfig, trainer="medcoder.training.rerank:train_rerank")
    class RerankCoder(Coder): ...

The trainer is named by its module path when it lives in a higher layer than
the class (training code imports the class, not the other way round); it is
imported when a config asks for it.

Built-in components are found lazily, so that coding notes with a TF-IDF
model never imports torch: a registry knows the packages that hold its
built-ins, and the name ``stem.vN`` lives in the module ``stem`` of one of
them (``textcnn.v1`` in ``medcoder.models.textcnn``). Asking for a name
imports that module only; :meth:`Registry.names` imports them all.

A component outside medcoder is found through its package's entry points:
``[project.entry-points."medcoder.models"] my_coder = "my_package.my_coder"``
(groups ``medcoder.models``, ``medcoder.sources``, ``medcoder.systems``); the
modules of a group are imported when a name is not among the built-ins. Code
that imports its module itself (a script, a test) needs no entry point.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from medcoder.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError):
    """A config or bundle names a component no registry entry (built-in or plugin) provides."""


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, its implementation and the config class of its section."""

    name: str
    target: Any
    config: type | None  # None: nothing in a config file selects it
    # saved systems: what trains one from its config, ``(config, output, reporter=) -> TrainedSystem``;
    # a callable or "package.module:function" (imported when used)
    trainer: Callable[..., Any] | str | None = None


class Registry(Generic[T]):
    """Name -> (implementation, config class) for one kind of component.

    ``tag`` is the config key that names the component (``type`` for models,
    ``kind`` for data sources and saved systems); ``packages`` hold the built-ins.
    """

    def __init__(
        self, kind: str, *, tag: str, packages: tuple[str, ...], group: str, config_named: bool = True
    ) -> None:
        self.kind = kind
        self.tag = tag
        # whether a config class's tag field defaults to the registered name (a saved system's training config
        # names the file's kind instead: ``kind: train`` trains a system of kind ``model``)
        self.config_named = config_named
        self.packages = packages
        self.group = group  # the entry-point group of plugin packages
        self._entries: dict[str, Entry] = {}
        self._all_loaded = False

    def register(
        self, name: str, *, config: type | None = None, trainer: Callable[..., Any] | str | None = None
    ) -> Callable[[T], T]:
        """Decorator registering its target under ``name``.

        ``config`` defaults to the target itself when the target is a config
        class. A config class must declare ``name`` as the default of its tag
        field, so a config section and the component it builds cannot disagree
        (a saved system's training config declares its file kind instead).
        ``trainer``: for saved systems, what ``medcoder train`` calls with a config of class ``config``.
        """

        def decorate(target: T) -> T:
            config_class = config if config is not None else target if hasattr(target, "model_fields") else None
            if config_class is not None:
                declared = config_class.model_fields.get(self.tag)  # type: ignore[attr-defined]
                if declared is None or (self.config_named and declared.default != name):
                    raise TypeError(f"{self.kind} {name!r}: its config class must default {self.tag!r} to {name!r}")
            if name in self._entries and self._entries[name].target is not target:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, target, config_class, trainer)  # type: ignore[arg-type]
            return target

        return decorate

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a throwaway component clean up with this)."""
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry:
        """The entry of ``name``, importing its built-in module if needed; a ConfigError lists the known names."""
        if name not in self._entries:
            self._import_builtin(name)
        if name not in self._entries:
            known = ", ".join(self.names()) or "none"
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {known})")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The implementation registered as ``name``."""
        return self.entry(name).target

    def config_class(self, name: str) -> type:
        """The config class of ``name``'s section."""
        config = self.entry(name).config
        if config is None:
            raise ConfigError(f"{self.kind} {name!r} has no config section")
        return config

    def trainer(self, name: str) -> Callable[..., Any]:
        """The trainer of ``name`` (its module imported if it was named by path)."""
        trainer = self.entry(name).trainer
        if trainer is None:
            raise ConfigError(f"{self.kind} {name!r} cannot be trained by a config")
        if isinstance(trainer, str):
            module, _, function = trainer.partition(":")
            return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]
        return trainer

    def names(self) -> list[str]:
        """Every registered name, built-ins included (this imports every built-in module)."""
        self.load_all()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self.load_all()
        return [self._entries[name] for name in sorted(self._entries)]

    def load_all(self) -> None:
        """Import every module of the built-in packages and of the plugins (each registers what it defines)."""
        if self._all_loaded:
            return
        for package in self.packages:
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(module.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        self._load_plugins()
        self._all_loaded = True

    def _load_plugins(self) -> None:
        """Import the modules other packages declare in the entry-point group :attr:`group`."""
        from importlib.metadata import entry_points

        for point in entry_points(group=self.group):
            try:
                point.load()
            except Exception as exc:  # a broken plugin is named, not a traceback from deep inside it
                raise ConfigError(
                    f"the {self.group} plugin {point.name!r} ({point.value}) failed to load: {exc}"
                ) from exc

    def _import_builtin(self, name: str) -> None:
        """Import the module that should register ``name``: its built-in module, else the plugins, else all."""
        stem = name.split(".")[0]
        if stem.isidentifier():
            for package in self.packages:
                try:
                    importlib.import_module(f"{package}.{stem}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{package}.{stem}":  # the module exists but something it imports does not
                        raise
                if name in self._entries:
                    return
        self._load_plugins()
        if name not in self._entries:
            self.load_all()


MODELS: Registry = Registry("model type", tag="type", packages=("medcoder.models",), group="medcoder.models")
"""Coding models (``model.type``): a ``CodingModel`` subclass and its config class."""

SOURCES: Registry = Registry(
    "data source kind", tag="kind", packages=("medcoder.data.sources",), group="medcoder.sources"
)
"""Data sources (``data.source.kind``): a config class whose ``read()`` returns notes."""

SYSTEMS: Registry = Registry(
    "saved system kind", tag="kind", packages=("medcoder.inference",), group="medcoder.systems", config_named=False
)
"""Saved systems (the ``kind`` of a bundle's ``config.json``): a ``Coder`` class that loads and saves itself,
with the config class that trains it and its trainer."""
