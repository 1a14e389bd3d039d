"""CNN transfer learning: a source-task TextCNN's embeddings (EM) and convolutions (CV) feed a new target head.

Freezing policies are values, not code paths: ``embeddings`` frozen|tuned and
``convolutions`` frozen|tuned|dual. ``dual`` keeps two copies of the source
feature extractor (embedding + convolutions): one is tuned on the target task,
the other stays frozen, and their features are concatenated, so target
training can adapt without forgetting what the source task taught.

Target network: source features ``[B, K*F]`` (``[B, 2*K*F]`` for dual) ->
dropout -> new adaptation layer (linear + ReLU) ``[B, A]`` -> new output
layer ``[B, L]``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from medcoder.errors import ConfigError
from medcoder.models.networks.cnn import TextCNN
from medcoder.models.networks.heads import CoderOutput, PooledLinear, masked_max_pool


def _features(embedding: nn.Module, convs: nn.ModuleList, input_ids: Tensor, mask: Tensor) -> Tensor:
    """TextCNN features ``[B, K*F]``: embed, convolve, ReLU, masked max over time."""
    embedded = embedding(input_ids, mask).transpose(1, 2)
    pooled = [masked_max_pool(torch.relu(conv(embedded)).transpose(1, 2), mask) for conv in convs]
    return torch.cat(pooled, dim=-1)


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


class TransferTextCNN(nn.Module):
    """A TextCNN whose feature extractor comes from a source-task model."""

    def __init__(
        self,
        source: TextCNN,
        n_labels: int,
        *,
        embeddings: str = "frozen",
        convolutions: str = "tuned",
        adaptation_dim: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if embeddings not in ("frozen", "tuned") or convolutions not in ("frozen", "tuned", "dual"):
            raise ConfigError(f"unknown freezing policy: embeddings={embeddings!r}, convolutions={convolutions!r}")
        self.embedding = copy.deepcopy(source.embedding)
        self.convs = copy.deepcopy(source.convs)
        _set_trainable(self.embedding, embeddings == "tuned")
        _set_trainable(self.convs, convolutions != "frozen")
        self.frozen_embedding: nn.Module | None = None
        self.frozen_convs: nn.ModuleList | None = None
        if convolutions == "dual":
            self.frozen_embedding = copy.deepcopy(source.embedding)
            self.frozen_convs = copy.deepcopy(source.convs)
            _set_trainable(self.frozen_embedding, False)
            _set_trainable(self.frozen_convs, False)
        width = sum(conv.out_channels for conv in source.convs) * (2 if convolutions == "dual" else 1)
        self.adaptation = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, adaptation_dim), nn.ReLU())
        self.output = PooledLinear(adaptation_dim, n_labels, dropout)

    def forward(self, input_ids: Tensor, mask: Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[B, T]`` -> logits ``[B, L]``; features ``[B, adaptation_dim]``."""
        features = _features(self.embedding, self.convs, input_ids, mask)
        if self.frozen_convs is not None:
            assert self.frozen_embedding is not None
            # The frozen copy never learns; running it in eval mode also keeps
            # its dropout off, so it is exactly the source extractor.
            self.frozen_embedding.eval()
            frozen = _features(self.frozen_embedding, self.frozen_convs, input_ids, mask)
            features = torch.cat([features, frozen], dim=-1)
        adapted = self.adaptation(features)
        return CoderOutput(logits=self.output(adapted), attention=None, features=adapted)
