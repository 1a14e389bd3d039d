"""A model another package would ship: imported through its entry point (``medcoder.models``) by the registry."""

from __future__ import annotations

from typing import Literal

from medcoder.models.tfidf_lr import TfidfLogisticRegression, TfidfLrConfig
from medcoder.registry import MODELS


class UnigramLrConfig(TfidfLrConfig):
    """TF-IDF unigrams + LR, packaged as a plugin."""

    type: Literal["plugin_unigram_lr.v1"] = "plugin_unigram_lr.v1"  # type: ignore[assignment]
    ngram_range: tuple[int, int] = (1, 1)


@MODELS.register("plugin_unigram_lr.v1", config=UnigramLrConfig)
class UnigramLr(TfidfLogisticRegression):
    config: UnigramLrConfig
