"""The saved system of kind ``model``: one trained model (a seed ensemble included) and its dev-tuned thresholds.

Layout (``medcoder.bundle.v2``, kind ``model``; v1 bundles load too), written and read by :class:`ModelCoder`
from the shared parts of :mod:`medcoder.inference.parts`::

    config.json        format, kind, the run config, versions, training info
    labels.json        the label space (codes, train frequencies, descriptions)
    thresholds.json    decision rule tuned on dev (threshold(s) or argmax)
    calibration.json   multi-label models: the calibrator fitted on dev (absent in older bundles: none)
    metrics.json       dev/test metrics of the run (and the calibration's ECE@20 before/after)
    README.md          the model card (it names the bundle's identity)
    model.safetensors  weights (+ model-specific JSON such as vocab.json)

A bundle is written into a temporary sibling directory and renamed into place, so a crash never leaves a
half-written bundle and an old one survives until the new one is complete. Loading reads only JSON and
safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcoder.bundles import bundle_identity, read_header
from medcoder.config import DataConfig, RunConfig
from medcoder.data.icd import CATALOG_PACKAGES
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError
from medcoder.evaluation.calibration import calibrate_probabilities
from medcoder.evaluation.report import render_model_card
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.base import Capabilities, Coder, Evidence, Scores
from medcoder.inference.parts import (
    new_bundle,
    read_calibration,
    read_metrics,
    read_thresholds,
    write_calibration,
    write_header,
    write_metrics,
    write_thresholds,
)
from medcoder.io import atomic_write_text
from medcoder.models.bundle import Bundle, read_model
from medcoder.registry import SYSTEMS


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole words: a span that starts or ends inside a word takes all of it.

    A transformer attends to subword pieces ("nitrofur" of "nitrofurantoin"); a coder reads words.
    """
    while 0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


@SYSTEMS.register("model", config=RunConfig, trainer="medcoder.training.run:train_model")
class ModelCoder(Coder):
    """Loads a model bundle once, then codes any number of notes."""

    kind = "model"
    batch_size = 256  # notes scored at once: bounds memory of the sparse/dense features

    def __init__(self, bundle: Bundle, path: Path | None = None, header: dict[str, Any] | None = None) -> None:
        super().__init__(path, header or {"kind": "model", "run": bundle.config.model_dump(mode="json")})
        self.bundle = bundle
        self._codes = bundle.labels.codes
        self._index = {code: j for j, code in enumerate(self._codes)}
        self.descriptions = bundle.labels.descriptions()

    @classmethod
    def load(cls, path: Path, header: dict[str, Any]) -> ModelCoder:
        config, labels, model = read_model(path, header=header)
        thresholds = read_thresholds(path, n_labels=len(labels))
        if (thresholds is None) != (config.task.type in ("multiclass", "pair")):
            raise BundleError(f"{path / 'thresholds.json'}: decision rule does not match task {config.task.type!r}")
        calibrator = read_calibration(path, single=thresholds is None)
        metrics = read_metrics(path)
        bundle = Bundle(config, labels, model, thresholds, metrics, header.get("info", {}), calibrator)
        return cls(bundle, path, header)

    @classmethod
    def open(cls, path: str | Path) -> ModelCoder:
        """The model bundle at ``path`` (a ``BundleError`` if it is a saved system of another kind)."""
        path = Path(path)
        header = read_header(path)
        if header["kind"] != cls.kind:
            raise BundleError(
                f"{path}: a saved {header['kind']} system, not a single model (open it with medcoder.load)"
            )
        return cls.load(path, header)

    def save(self, path: str | Path) -> Path:
        """Write the bundle to the folder ``path`` atomically (an older bundle there is replaced once this one is
        complete); the model card, written last, names its identity."""
        path, bundle = Path(path), self.bundle
        catalog = CATALOG_PACKAGES.get(bundle.labels.system, ())  # it named the codes and gave their descriptions
        requires = [*bundle.model.requires, *catalog]
        with new_bundle(path) as tmp:
            body = {"run": bundle.config.model_dump(mode="json"), "info": bundle.info}
            header = write_header(tmp, self.kind, body, requires=requires)
            bundle.labels.to_json(tmp / "labels.json")
            write_thresholds(tmp, bundle.thresholds)
            if bundle.calibrator is not None:
                write_calibration(tmp, bundle.calibrator)
            write_metrics(tmp, bundle.metrics)
            bundle.model.save(tmp)
            identity = f"{bundle.config.name}@{bundle_identity(tmp)[:12]}"
            card = render_model_card(bundle.config, bundle.labels, bundle.metrics, header["info"], identity=identity)
            atomic_write_text(tmp / "README.md", card)
        bundle.info = header["info"]
        self.path, self.header = path, header
        self.__dict__.pop("identity", None)  # computed again from the files saved
        return path

    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        return path / "labels.json"

    def label_space(self) -> LabelSpace:
        return self.bundle.labels

    @property
    def name(self) -> str:
        return self.bundle.config.name

    @property
    def model_type(self) -> str:
        return self.bundle.config.model.type

    def test_metrics(self) -> dict[str, Any]:
        test = self.bundle.metrics.get("test")
        return test if isinstance(test, dict) else {}

    @property
    def codes(self) -> list[str]:
        return self._codes

    def description(self, code: str) -> str | None:
        j = self._index.get(code)
        return None if j is None else self.descriptions[j]

    @property
    def single_label(self) -> bool:
        return self.bundle.thresholds is None

    @property
    def decision(self) -> Thresholds | None:
        return self.bundle.thresholds

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            explain=self.bundle.model.can_explain(),
            why_not_explain=f"model {self.bundle.model.name} cannot explain its codes: it gives no evidence spans "
            "(tfidf_lr.v1 and the models with label-wise attention do)",
            pairs=self.bundle.task == "pair",
        )

    def score_batch(self, texts: Sequence[str], pairs: Sequence[str] | None) -> Scores:
        """Probabilities float32 ``[notes, labels]``, calibrated as the bundle's calibration.json says (fitted on
        dev; the thresholds apply to these)."""
        scores = self.bundle.model.predict_scores(texts, pairs=pairs)
        return Scores(dense=calibrate_probabilities(self.bundle.calibrator, scores))

    def evidence(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], top: int, context: Any
    ) -> list[dict[str, list[Evidence]]]:
        """The spans the model weighed most for each code, widened to whole words (strongest first)."""
        columns = [[self._index[c] for c in note] for note in codes]
        spans = self.bundle.model.explain(texts, columns, top=top)
        out = []
        for text, note in zip(texts, spans, strict=True):
            evidence: dict[str, list[Evidence]] = {}
            for j, found in note.items():
                words: dict[tuple[int, int], float] = {}  # strongest first: two pieces of one word keep the first
                for s, e, w in found:
                    words.setdefault(whole_words(text, s, e), w)
                evidence[self._codes[j]] = [Evidence(s, e, text[s:e], round(w, 4)) for (s, e), w in words.items()]
            out.append(evidence)
        return out

    def data_config(self) -> DataConfig:
        return self.bundle.config.data
