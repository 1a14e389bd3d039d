"""Bidirectional GRU coder with a pooled or a label-wise attention head.

``input_ids`` ``[batch, time]`` -> :class:`~medcoder.models.networks.cnn.WordEmbedding`
-> bidirectional GRU over the real tokens only (packed sequences, so padding
never enters the recurrence and the backward direction starts at each
document's last real token) -> states ``[batch, time, 2 * hidden_size]`` ->

- ``output="pooled"``: masked max or mean over time -> :class:`PooledLinear`;
- ``output="label_attention"``: :class:`LabelAttention`, as in CAML.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medcoder.models.networks.cnn import WordEmbedding
from medcoder.models.networks.heads import CoderOutput, LabelAttention, PooledLinear, masked_max_pool, masked_mean_pool

_OUTPUTS = ("pooled", "label_attention")
_POOLINGS = ("max", "mean")


class BiGRU(nn.Module):
    """Embedding -> bidirectional GRU -> pooled linear or label-wise attention head.

    ``dropout`` applies to the embeddings, between GRU layers (when
    ``num_layers > 1``) and before the pooled linear layer. Inputs must be
    right-padded (each mask row is True for a prefix): packing needs lengths.
    Attributes: ``embedding``, ``gru``, ``head`` (:class:`PooledLinear` or
    :class:`LabelAttention`).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_labels: int,
        *,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.2,
        output: Literal["pooled", "label_attention"] = "pooled",
        pooling: Literal["max", "mean"] = "max",
        pretrained: np.ndarray | None = None,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.embedding = WordEmbedding(
            num_embeddings, embedding_dim, pretrained=pretrained, freeze=freeze_embedding, dropout=dropout
        )
        self.gru = nn.GRU(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,  # torch warns about dropout on a single layer
        )
        self.head: PooledLinear | LabelAttention
        if output == "pooled":
            self.head = PooledLinear(2 * hidden_size, n_labels, dropout)
        else:
            self.head = LabelAttention(2 * hidden_size, n_labels)

    def encode(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """GRU states ``[batch, time, 2 * hidden_size]``; zeros at padding positions."""
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, positions.unsqueeze(0) < lengths.unsqueeze(1)):
            raise ValueError("BiGRU needs right-padded input: every mask row must be True for a prefix only")
        embedded = self.embedding(input_ids, mask)
        # Packing rejects length 0; an empty document runs over one (zero) step and is masked out afterwards.
        packed = pack_padded_sequence(embedded, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        hidden, _ = pad_packed_sequence(states, batch_first=True, total_length=mask.shape[1])
        return hidden

    def forward(self, input_ids: Tensor, mask: Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[batch, time]`` -> logits ``[batch, labels]``
        (+ attention ``[batch, labels, time]`` with the label-attention head)."""
        hidden = self.encode(input_ids, mask)
        if isinstance(self.head, PooledLinear):
            pool = masked_max_pool if self.pooling == "max" else masked_mean_pool
            features = pool(hidden, mask)
            return CoderOutput(logits=self.head(features), attention=None, features=features)
        logits, attention, vectors = self.head(hidden, mask)
        return CoderOutput(logits=logits, attention=attention, features=vectors)
