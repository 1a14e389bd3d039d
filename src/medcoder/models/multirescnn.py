"""``multirescnn.v1``: Li & Yu (2020), multi-filter residual convolutions + per-label attention."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from medcoder.models.networks.cnn import MultiResCNN
from medcoder.models.word import WordCoder, WordModelConfig
from medcoder.registry import MODELS


class MultiResCnnConfig(WordModelConfig):
    """Li & Yu (2020): multi-filter residual convolutions + per-label attention."""

    type: Literal["multirescnn.v1"] = "multirescnn.v1"
    filter_sizes: tuple[int, ...] = (3, 5, 9, 15, 19, 25)
    num_filters: int = Field(50, ge=1)


@MODELS.register("multirescnn.v1", config=MultiResCnnConfig)
class MultiResCnnCoder(WordCoder):
    """MultiResCNN; its label-wise attention explains each code."""

    config: MultiResCnnConfig

    def can_explain(self) -> bool:
        return True

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        return self.word_network(MultiResCNN, pretrained, kernel_sizes=cfg.filter_sizes, num_filters=cfg.num_filters)
