"""``caml.v1``: Mullenbach et al. (2018), one convolution + per-label attention."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from medcoder.models.networks.cnn import CAML
from medcoder.models.word import WordCoder, WordModelConfig
from medcoder.registry import MODELS


class CamlConfig(WordModelConfig):
    """Mullenbach et al. (2018): one convolution + per-label attention."""

    type: Literal["caml.v1"] = "caml.v1"
    kernel_size: int = Field(10, ge=1)
    num_filters: int = Field(50, ge=1)


@MODELS.register("caml.v1", config=CamlConfig)
class CamlCoder(WordCoder):
    """CAML; its label-wise attention explains each code."""

    config: CamlConfig

    def can_explain(self) -> bool:
        return True

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        return self.word_network(CAML, pretrained, kernel_size=cfg.kernel_size, num_filters=cfg.num_filters)
