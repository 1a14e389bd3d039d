"""One contract, one suite: every registered model type is checked the same way, driven by the registry.

The list of models comes from ``MODELS.names()``, never from this file: a model
registered tomorrow is built from its own config's defaults, shrunk by field
name (as scikit-learn's ``check_estimator`` shrinks ``n_iter``), and must

- validate from its config section and name a misspelt key in the error;
- learn the trigger corpus (label j is on iff its trigger word occurs) in a few
  epochs: test MAP well above chance, and the training loss falling;
- give ``predict_scores`` of shape ``[notes, labels]``, float32, inside [0, 1];
- save with safetensors/JSON only and load to identical scores;
- explain with spans that lie inside the note, or say clearly that it cannot.

How good the evidence is (does it point at the trigger word?) is a property of
each model, checked by its own tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trigger_corpus import TRIGGERS, corpus

from medcoder.config import RunConfig, deep_merge, validate
from medcoder.errors import ConfigError, MedcoderError
from medcoder.evaluation.metrics import mean_average_precision
from medcoder.models import build_model, load_model
from medcoder.models.base import DevSet
from medcoder.registry import MODELS

# Sizes by config field name, whatever the model: a field the model does not have is left alone.
SHRINK: dict[str, Any] = {
    "train": {"epochs": 10, "batch_size": 16, "lr": 0.01, "early_stopping_patience": 10, "num_threads": 1},
    "encoding": {"max_tokens": 60, "min_count": 1},
    "embedding": {"dim": 16},
    "num_filters": 16,
    "hidden": 16,
    "projection": 16,
    "dropout": 0.1,
    "max_tokens": 62,  # within the tiny encoder's 64 positions
    "min_df": 1,
    "n_jobs": 1,
}
DESCRIPTIONS = [f"{word} finding" for word in TRIGGERS]
RANDOM_RANKING_MAP = 0.45  # measured: ranking the 6 labels at random on this corpus


def smallest_section(name: str, tiny_encoder: str) -> dict[str, Any]:
    """The model's default config section with every field :data:`SHRINK` names made small."""
    defaults = MODELS.config_class(name)().model_dump(mode="json")
    section = {"type": name}
    for field, value in SHRINK.items():
        if field in defaults:
            section[field] = deep_merge(defaults[field], value) if isinstance(value, dict) else value
    if "encoder" in defaults:  # a pretrained-encoder model: the tiny random BERT built for the tests
        section["encoder"] = tiny_encoder
    return section


def fit_smallest(name: str, tiny_encoder: str, data: Any, work: Path) -> tuple[dict[str, Any], Any]:
    """(the smallest config section of model ``name``, the model fitted on the trigger corpus)."""
    section = smallest_section(name, tiny_encoder)
    config = validate(RunConfig, {"model": section}, source=f"{name} config").model
    (texts, y), (dev_texts, dev_y), _ = data
    model = build_model(config, n_labels=len(TRIGGERS), task="multilabel", seed=0, label_descriptions=DESCRIPTIONS)
    model.fit(texts, y, dev=DevSet(dev_texts, dev_y), work_dir=work)
    return section, model


def check_misspelt_key(name: str, section: dict[str, Any], model: Any, data: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run.yaml: unknown key 'model.lerning_rate'"):
        validate(RunConfig, {"model": {**section, "lerning_rate": 0.1}}, source="run.yaml")


def check_learns_the_trigger_pattern(name: str, section: dict[str, Any], model: Any, data: Any, tmp_path: Path) -> None:
    _, _, (test_texts, test_y) = data
    assert mean_average_precision(test_y, model.predict_scores(test_texts)) > 0.85 > RANDOM_RANKING_MAP, name
    for member in model.training_report().get("members") or []:  # iterative models: the loss fell
        losses = [epoch["train_loss"] for epoch in member["history"] if epoch["epoch"] > 0]
        assert losses[-1] < 0.7 * losses[0], (name, losses)


def check_scores(name: str, section: dict[str, Any], model: Any, data: Any, tmp_path: Path) -> None:
    _, _, (test_texts, _) = data
    scores = model.predict_scores(test_texts)
    assert scores.shape == (len(test_texts), len(TRIGGERS)) and scores.dtype == np.float32, name
    assert np.all((scores >= 0.0) & (scores <= 1.0)) and np.all(np.isfinite(scores)), name


def check_save_and_reload(name: str, section: dict[str, Any], model: Any, data: Any, tmp_path: Path) -> None:
    _, _, (test_texts, _) = data
    model.save(tmp_path)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.suffix in (".safetensors", ".json", ".txt", ".model") for p in written), written
    for required in type(model).weight_files:
        assert (tmp_path / required).is_file(), (name, required)
    again = load_model(tmp_path, model.config, n_labels=len(TRIGGERS), task="multilabel")
    np.testing.assert_array_equal(again.predict_scores(test_texts), model.predict_scores(test_texts))


def check_explain(name: str, section: dict[str, Any], model: Any, data: Any, tmp_path: Path) -> None:
    _, _, (test_texts, test_y) = data
    texts = test_texts[:5]
    asked = [list(np.flatnonzero(row)) for row in test_y[:5]]
    if not model.can_explain():
        with pytest.raises(MedcoderError, match="cannot explain|no label-wise attention|no attention"):
            model.explain(texts, asked)
        return
    explained = model.explain(texts, asked, top=2)
    assert len(explained) == len(texts)
    for text, labels, spans in zip(texts, asked, explained, strict=True):
        assert set(spans) == set(labels), name
        for label_spans in spans.values():
            assert 1 <= len(label_spans) <= 2, (name, label_spans)
            for start, end, weight in label_spans:
                assert 0 <= start < end <= len(text) and np.isfinite(weight), (name, start, end)


CHECKS = (check_misspelt_key, check_learns_the_trigger_pattern, check_scores, check_save_and_reload, check_explain)


@pytest.fixture(scope="module")
def data():
    return corpus(160, seed=0), corpus(40, seed=1), corpus(40, seed=2)


@pytest.fixture(scope="module", params=MODELS.names())
def trained(request, data, tiny_bert, tmp_path_factory):
    """(model type, its config section, the model fitted on the trigger corpus), once per registered model."""
    section, model = fit_smallest(request.param, tiny_bert, data, tmp_path_factory.mktemp("work"))
    return request.param, section, model


def test_registry_covers_every_built_in_model() -> None:
    # the seven families of the literature and ours; a new one joins the suite by registering
    assert {"tfidf_lr.v1", "textcnn.v1", "caml.v1", "drcaml.v1", "multirescnn.v1", "bigru.v1", "transformer.v1"} <= set(
        MODELS.names()
    )


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_contract(trained, check, data, tmp_path: Path) -> None:
    name, section, model = trained
    check(name, section, model, data, tmp_path)
