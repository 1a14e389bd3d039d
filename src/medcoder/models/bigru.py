"""``bigru.v1``: a bidirectional GRU with a pooled or a label-wise attention output."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from medcoder.models.networks.rnn import BiGRU
from medcoder.models.word import WordCoder, WordModelConfig
from medcoder.registry import MODELS


class BiGruConfig(WordModelConfig):
    """Bidirectional GRU with a pooled or label-wise attention output."""

    type: Literal["bigru.v1"] = "bigru.v1"
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    output: Literal["pooled", "label_attention"] = "label_attention"


@MODELS.register("bigru.v1", config=BiGruConfig)
class BiGruCoder(WordCoder):
    """BiGRU; with ``output: label_attention`` its attention explains each code."""

    config: BiGruConfig

    def can_explain(self) -> bool:
        return self.config.output == "label_attention"

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        return self.word_network(BiGRU, pretrained, hidden_size=cfg.hidden, num_layers=cfg.layers, output=cfg.output)
