"""CNN transfer learning: a source-task TextCNN's embeddings (EM) and convolutions (CV) feed a new target head.

Freezing policies are values, not code paths: ``embeddings`` frozen|tuned and
``convolutions`` frozen|tuned|dual. ``dual`` keeps two copies of the source
feature extractor (embedding + convolutions): one is tuned on the target task,
the other stays frozen, and their features are concatenated, so target
training can adapt without forgetting what the source task taught.

Vocabulary: with ``new_rows`` (``[N, E]``) the target vocabulary is the
source's followed by N words the source lacks (ids ``V_source..V_source+N-1``),
and the embedding becomes a :class:`MergedEmbedding`: the source table and a
table of the new rows side by side. Under ``embeddings: frozen`` the source
rows stay frozen and the new rows are trained (they start from target-side
vectors the source convolutions never saw, and there is no source value to
protect); under ``tuned`` both are. The frozen copy of ``dual`` freezes both
tables at their starting values.

Target network: source features ``[B, K*F]`` (``[B, 2*K*F]`` for dual) ->
dropout -> new adaptation layer (linear + ReLU) ``[B, A]`` -> new output
layer ``[B, L]``.
"""

from __future__ import annotations

import copy

import numpy as np
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


class MergedEmbedding(nn.Module):
    """A source embedding table (ids ``< n_source``) beside a table of new rows (ids ``>= n_source``).

    Two tables rather than one with a gradient mask, so each can be frozen on its own and an
    optimizer's weight decay can never move a frozen row. Same interface as
    :class:`~medcoder.models.networks.cnn.WordEmbedding`: ``(input_ids, mask) -> [B, T, E]``,
    zero where ``mask`` is False.
    """

    def __init__(self, source: nn.Module, new_rows: np.ndarray | Tensor) -> None:
        super().__init__()
        self.source = copy.deepcopy(source)  # a WordEmbedding
        table = self.source.embedding
        self.n_source = int(table.num_embeddings)
        rows = torch.as_tensor(np.asarray(new_rows, dtype=np.float32))
        if rows.ndim != 2 or rows.shape[1] != table.embedding_dim:
            raise ValueError(f"new rows must be [n, {table.embedding_dim}], got {tuple(rows.shape)}")
        self.new = nn.Embedding.from_pretrained(rows.clone(), freeze=False) if rows.shape[0] else None

    @property
    def dim(self) -> int:
        return int(self.source.embedding.embedding_dim)

    def set_trainable(self, source: bool, new: bool) -> None:
        _set_trainable(self.source, source)
        if self.new is not None:
            _set_trainable(self.new, new)

    def forward(self, input_ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """``input_ids`` ``[B, T]`` (merged ids) -> ``[B, T, E]``."""
        if self.new is None:
            return self.source(input_ids, mask)
        is_new = input_ids >= self.n_source
        old = self.source(torch.where(is_new, torch.zeros_like(input_ids), input_ids), mask)
        new = self.new((input_ids - self.n_source).clamp(min=0))
        if mask is not None:
            new = new * mask.unsqueeze(-1).to(new.dtype)
        return torch.where(is_new.unsqueeze(-1), new.to(old.dtype), old)


class TransferTextCNN(nn.Module):
    """A TextCNN whose feature extractor comes from a source-task model."""

    def __init__(
        self,
        source: TextCNN,
        n_labels: int,
        *,
        embeddings: str = "frozen",
        convolutions: str = "tuned",
        adaptation_dim: int | None = 256,
        dropout: float = 0.5,
        new_rows: np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        if embeddings not in ("frozen", "tuned") or convolutions not in ("frozen", "tuned", "dual"):
            raise ConfigError(f"unknown freezing policy: embeddings={embeddings!r}, convolutions={convolutions!r}")
        self.embedding: nn.Module
        if new_rows is None:  # the source vocabulary
            self.embedding = copy.deepcopy(source.embedding)
            _set_trainable(self.embedding, embeddings == "tuned")
        else:  # merged: source rows frozen or tuned, new rows always trained
            self.embedding = MergedEmbedding(source.embedding, new_rows)
            self.embedding.set_trainable(embeddings == "tuned", True)
        self.convs = copy.deepcopy(source.convs)
        _set_trainable(self.convs, convolutions != "frozen")
        self.frozen_embedding: nn.Module | None = None
        self.frozen_convs: nn.ModuleList | None = None
        if convolutions == "dual":
            self.frozen_embedding = copy.deepcopy(self.embedding)
            self.frozen_convs = copy.deepcopy(source.convs)
            _set_trainable(self.frozen_embedding, False)
            _set_trainable(self.frozen_convs, False)
        width = sum(conv.out_channels for conv in source.convs) * (2 if convolutions == "dual" else 1)
        # adaptation_dim None: no adaptation layer, the new output reads the source features (dropout once),
        # i.e. a TextCNN of the target's shape started from the source's embeddings and convolutions
        self.adaptation: nn.Module = (
            nn.Identity()
            if adaptation_dim is None
            else nn.Sequential(nn.Dropout(dropout), nn.Linear(width, adaptation_dim), nn.ReLU())
        )
        self.output = PooledLinear(width if adaptation_dim is None else adaptation_dim, n_labels, dropout)

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
