"""The contract every model implements, and how models are built from config.

A model maps texts to scores ``[n_docs, n_labels]``: sigmoid probabilities for
multi-label tasks, softmax probabilities for single-label ones. It saves its
learned state into a bundle directory using only safetensors and JSON, and it
can say which spans of a note made it choose a label (:meth:`CodingModel.explain`)
or says clearly that it cannot. Every registered model is checked against this
contract by the conformance suite (``tests/test_conformance.py``), driven by the
registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.registry import MODELS

TaskType = str  # "multilabel" | "multiclass" | "pair"
Progress = Callable[[int, int], None]  # (done, total)
Spans = list[tuple[int, int, float]]  # (char start, char end, weight), strongest first


@dataclass(frozen=True)
class DevSet:
    """The dev split as a model sees it: texts, optional second texts, targets bool ``[n_docs, n_labels]``."""

    texts: Sequence[str]
    y: np.ndarray
    pairs: Sequence[str] | None = None


class CodingModel(ABC):
    """Base class: constructors store arguments only; learned state ends in ``_``."""

    #: file names this model writes into a bundle (checked on load)
    weight_files: ClassVar[tuple[str, ...]] = ()
    #: distributions the saved model needs, recorded with their versions in the bundle
    requires: ClassVar[tuple[str, ...]] = ("numpy", "safetensors")

    def __init__(
        self,
        config: Any,
        *,
        n_labels: int,
        task: TaskType,
        seed: int = 0,
        label_descriptions: Sequence[str | None] | None = None,
        label_codes: Sequence[str] | None = None,
        label_system: str | None = None,
    ) -> None:
        self.config = config
        self.n_labels = n_labels
        self.task = task
        self.seed = seed
        self.label_descriptions = None if label_descriptions is None else list(label_descriptions)
        self.label_codes = None if label_codes is None else list(label_codes)
        self.label_system = label_system

    @property
    def single_label(self) -> bool:
        return self.task in ("multiclass", "pair")

    @property
    def name(self) -> str:
        return str(self.config.type)

    @abstractmethod
    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        pairs: Sequence[str] | None = None,
        dev: DevSet | None = None,
        work_dir: Path | None = None,
        progress: Progress | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> CodingModel:
        """Train on ``texts`` with targets ``y`` bool ``[n_docs, n_labels]`` (one-hot when single-label).

        ``dev`` is used only for early stopping; ``work_dir`` holds checkpoints
        so that a killed run resumes when started again. ``spans`` are each
        note's coded evidence spans (character ranges), for models with a
        span-tagging auxiliary task; others ignore them.
        """

    def training_report(self) -> dict[str, Any]:
        """What the bundle's config.json records about training (epochs, best dev score...)."""
        return {}

    @abstractmethod
    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities ``[n_docs, n_labels]`` (float32)."""

    def can_explain(self) -> bool:
        """Whether :meth:`explain` gives evidence spans (else it raises a ``MedcoderError`` saying why not)."""
        return False

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, top: int = 3
    ) -> list[dict[int, Spans]]:
        """Per note, ``{label index: spans}``: the strongest character spans behind each requested label.

        Spans lie inside their note (``0 <= start < end <= len(text)``). A model
        that cannot explain raises a ``MedcoderError`` saying so.
        """
        raise MedcoderError(f"model {self.name} cannot explain its codes (it has no evidence spans to give)")

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write learned state into ``directory`` (safetensors + JSON only)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, config: Any, *, n_labels: int, task: TaskType) -> CodingModel:
        """Rebuild a fitted model from ``directory``."""


def build_model(
    config: Any,
    *,
    n_labels: int,
    task: TaskType,
    seed: int = 0,
    label_descriptions: Sequence[str | None] | None = None,
    label_codes: Sequence[str] | None = None,
    label_system: str | None = None,
) -> CodingModel:
    """Instantiate the registered model for ``config.type``."""
    cls = MODELS.get(config.type)
    return cls(
        config,
        n_labels=n_labels,
        task=task,
        seed=seed,
        label_descriptions=label_descriptions,
        label_codes=label_codes,
        label_system=label_system,
    )


def load_model(directory: Path, config: Any, *, n_labels: int, task: TaskType) -> CodingModel:
    """Load the registered model for ``config.type`` from a bundle directory."""
    return MODELS.get(config.type).load(directory, config, n_labels=n_labels, task=task)
