"""Convolutional word-level coders: TextCNN, CAML, DR-CAML and MultiResCNN.

All take ``input_ids`` ``[batch, time]`` (0 = padding) and ``mask`` ``[batch,
time]`` (True = real token) and return a :class:`~medcoder.models.networks.heads.CoderOutput`.
They are plain ``nn.Module``s built from explicit arguments; the config layer
chooses the values, and the training loop knows nothing of their insides.

Every convolution uses 'same' length padding (``T' = T``, also for even kernel
widths) and sees zeros outside the document: embeddings and the outputs of
every conv that feeds another conv are multiplied by the mask. Padding
therefore looks exactly like a conv's own zero padding, which is what makes
a document's outputs independent of how far its batch is padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medcoder.models.networks.heads import CoderOutput, LabelAttention, PooledLinear, masked_max_pool


class WordEmbedding(nn.Module):
    """Token ids ``[batch, time]`` -> vectors ``[batch, time, dim]``, id 0 = padding.

    ``pretrained`` (``[num_embeddings, dim]``, e.g. word2vec trained on the
    notes) replaces the random N(0, 1) start; its row 0 is zeroed so padding
    stays inert. ``freeze`` keeps the vectors fixed during training.
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        *,
        pretrained: np.ndarray | None = None,
        freeze: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim, padding_idx=0)
        if pretrained is not None:
            if pretrained.shape != (num_embeddings, dim):
                raise ValueError(
                    f"pretrained embeddings have shape {pretrained.shape}, expected ({num_embeddings}, {dim})"
                )
            with torch.no_grad():
                self.embedding.weight.copy_(torch.as_tensor(np.asarray(pretrained, dtype=np.float32)))
                self.embedding.weight[0].zero_()
        self.embedding.weight.requires_grad_(not freeze)
        self.dropout = nn.Dropout(dropout)

    @property
    def dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, input_ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """``input_ids`` ``[batch, time]`` -> ``[batch, time, dim]``, zero where ``mask`` is False."""
        vectors = self.dropout(self.embedding(input_ids))
        if mask is not None:
            vectors = vectors * mask.unsqueeze(-1).to(vectors.dtype)
        return vectors


class SameConv1d(nn.Conv1d):
    """``Conv1d`` whose output ``[batch, out, time]`` has the input's length for any width.

    An even width pads one more zero on the right than on the left (as torch's
    ``padding="same"``, which warns on every even-width call).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.same_padding = ((kernel_size - 1) // 2, kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[batch, in, time]`` -> ``[batch, out, time]``."""
        return super().forward(F.pad(x, self.same_padding))


class TextCNN(nn.Module):
    """Kim (2014): embedding -> parallel convs -> ReLU -> masked max over time -> dropout -> linear.

    Attributes used by transfer learning: ``embedding`` (:class:`WordEmbedding`),
    ``convs`` (one ``Conv1d`` ``embedding_dim -> num_filters`` per width) and
    ``output`` (:class:`PooledLinear`, ``len(kernel_sizes) * num_filters -> n_labels``).
    Unlike Kim's narrow convolutions these keep length ('same' padding) so that
    notes shorter than the widest filter still work.

    Parameters: ``V*E + sum_k (k*E*F + F) + K*F*L + L`` (V vocabulary, E
    embedding dim, F filters, K widths, L labels).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_labels: int,
        *,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        num_filters: int = 100,
        dropout: float = 0.5,
        pretrained: np.ndarray | None = None,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = WordEmbedding(num_embeddings, embedding_dim, pretrained=pretrained, freeze=freeze_embedding)
        self.convs = nn.ModuleList(SameConv1d(embedding_dim, num_filters, k) for k in kernel_sizes)
        self.output = PooledLinear(len(kernel_sizes) * num_filters, n_labels, dropout)

    def forward(self, input_ids: Tensor, mask: Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[batch, time]`` -> logits ``[batch, labels]``, features ``[batch, K*F]``."""
        embedded = self.embedding(input_ids, mask).transpose(1, 2)  # [B, E, T]
        pooled = [masked_max_pool(torch.relu(conv(embedded)).transpose(1, 2), mask) for conv in self.convs]
        features = torch.cat(pooled, dim=-1)
        return CoderOutput(logits=self.output(features), attention=None, features=features)


class CAML(nn.Module):
    """Mullenbach et al. (2018): embedding -> dropout -> conv -> tanh -> label-wise attention.

    ``H = tanh(conv(E))`` ``[batch, time, num_filters]``; each label attends over
    ``H`` and scores its own document vector (:class:`LabelAttention`, attribute
    ``head``). Returns attention ``[batch, labels, time]`` and the label vectors
    ``[batch, labels, num_filters]`` as features.

    Parameters: ``V*E + (k*E*F + F) + 2*L*F + L``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_labels: int,
        *,
        kernel_size: int = 10,
        num_filters: int = 50,
        dropout: float = 0.2,
        pretrained: np.ndarray | None = None,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = WordEmbedding(
            num_embeddings, embedding_dim, pretrained=pretrained, freeze=freeze_embedding, dropout=dropout
        )
        self.conv = SameConv1d(embedding_dim, num_filters, kernel_size)
        nn.init.xavier_uniform_(self.conv.weight)  # as in the CAML reference code
        self.head = LabelAttention(num_filters, n_labels)

    def forward(self, input_ids: Tensor, mask: Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[batch, time]`` -> logits ``[batch, labels]``, attention ``[batch, labels, time]``."""
        embedded = self.embedding(input_ids, mask).transpose(1, 2)  # [B, E, T]
        hidden = torch.tanh(self.conv(embedded)).transpose(1, 2)  # [B, T, F]
        logits, attention, vectors = self.head(hidden, mask)
        return CoderOutput(logits=logits, attention=attention, features=vectors)


class DRCAML(CAML):
    """CAML + description regularisation (Mullenbach et al. 2018, "DR-CAML").

    Each code's description (``description_ids`` ``[labels, desc_len]``, 0 =
    padding) is embedded with the model's own word embedding (no dropout), passed
    through its own conv (``description_conv``, same width and filter count as
    the main conv) and tanh, and max-pooled over its tokens: ``z_l``
    ``[num_filters]``. The paper adds a linear layer after the pooling; we drop it,
    so ``z_l`` lives directly in the space of the output weights.

    :meth:`regularizer` pulls each positive label's output weight ``beta_l``
    (``head.output_weight[l]``) towards ``z_l``, which helps rare codes borrow
    from their descriptions. The descriptions are a non-persistent buffer: they
    follow ``.to(device)`` but are not saved with the weights (the label space
    rebuilds them).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_labels: int,
        *,
        description_ids: Tensor,
        lambda_: float = 0.01,
        kernel_size: int = 10,
        num_filters: int = 50,
        dropout: float = 0.2,
        pretrained: np.ndarray | None = None,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__(
            num_embeddings,
            embedding_dim,
            n_labels,
            kernel_size=kernel_size,
            num_filters=num_filters,
            dropout=dropout,
            pretrained=pretrained,
            freeze_embedding=freeze_embedding,
        )
        if description_ids.ndim != 2 or description_ids.shape[0] != n_labels:
            raise ValueError(
                f"description_ids must be [n_labels={n_labels}, desc_len], got {tuple(description_ids.shape)}"
            )
        self.lambda_ = lambda_
        self.register_buffer("description_ids", description_ids.long(), persistent=False)
        self.description_conv = SameConv1d(embedding_dim, num_filters, kernel_size)
        nn.init.xavier_uniform_(self.description_conv.weight)

    def description_vectors(self, labels: Tensor | None = None) -> Tensor:
        """``z`` for the label indices ``labels`` ``[k]`` (default: all) -> ``[k, num_filters]``."""
        ids = self.description_ids if labels is None else self.description_ids[labels]
        mask = ids != 0
        embedded = self.embedding.embedding(ids) * mask.unsqueeze(-1)
        hidden = torch.tanh(self.description_conv(embedded.transpose(1, 2))).transpose(1, 2)
        return masked_max_pool(hidden, mask)

    def regularizer(self, labels: Tensor) -> Tensor:
        """``lambda * mean ||beta_l - z_l||^2`` over the positive (document, label) pairs of ``labels`` ``[batch, labels]``.

        Descriptions are encoded only for the labels present in the batch (a
        full label space has thousands). Zero (a scalar) when nothing is positive.
        """
        per_label = (labels > 0).sum(dim=0)  # positive documents per label, [L]
        total = per_label.sum()
        if int(total) == 0:
            return self.head.output_weight.new_zeros(())
        present = per_label.nonzero().squeeze(1)
        beta = self.head.output_weight[present]
        distance = (beta - self.description_vectors(present).to(beta.dtype)).pow(2).sum(dim=-1)
        return self.lambda_ * (per_label[present].to(distance.dtype) * distance).sum() / total


class _ResidualBlock(nn.Module):
    """MultiResCNN's residual block: ``[batch, in_channels, time]`` -> ``[batch, out_channels, time]``.

    ``tanh(BN(conv(tanh(BN(conv(x))))) + BN(conv1x1(x)))`` -> dropout. In
    training, batch-norm statistics include padded positions (as in the
    original); in eval mode running statistics make outputs padding-independent.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = SameConv1d(in_channels, out_channels, kernel_size, bias=False)
        self.norm1 = nn.BatchNorm1d(out_channels)
        self.conv2 = SameConv1d(out_channels, out_channels, kernel_size, bias=False)
        self.norm2 = nn.BatchNorm1d(out_channels)
        self.shortcut = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.shortcut_norm = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x`` ``[batch, in, time]``, ``keep`` ``[batch, 1, time]`` (1 = real token) -> ``[batch, out, time]``."""
        inner = torch.tanh(self.norm1(self.conv1(x))) * keep
        out = torch.tanh(self.norm2(self.conv2(inner)) + self.shortcut_norm(self.shortcut(x)))
        return self.dropout(out) * keep


class _ResChannel(nn.Module):
    """One MultiResCNN channel: conv ``E -> E`` (width k) -> tanh -> residual block ``E -> F`` (width k)."""

    def __init__(self, embedding_dim: int, num_filters: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.base_conv = SameConv1d(embedding_dim, embedding_dim, kernel_size)
        nn.init.xavier_uniform_(self.base_conv.weight)
        self.residual = _ResidualBlock(embedding_dim, num_filters, kernel_size, dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x`` ``[batch, E, time]`` -> ``[batch, F, time]``."""
        return self.residual(torch.tanh(self.base_conv(x)) * keep, keep)


class MultiResCNN(nn.Module):
    """Li & Yu (2020): embedding -> parallel residual conv channels of different widths -> label attention.

    Each width ``k`` gives ``num_filters`` features per position; the channels
    are concatenated (``len(kernel_sizes) * num_filters``) and read by a
    :class:`LabelAttention` head (attribute ``head``), as in CAML. Returns
    attention ``[batch, labels, time]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_labels: int,
        *,
        kernel_sizes: Sequence[int] = (3, 5, 9, 15, 19, 25),
        num_filters: int = 50,
        dropout: float = 0.2,
        pretrained: np.ndarray | None = None,
        freeze_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = WordEmbedding(
            num_embeddings, embedding_dim, pretrained=pretrained, freeze=freeze_embedding, dropout=dropout
        )
        self.channels = nn.ModuleList(_ResChannel(embedding_dim, num_filters, k, dropout) for k in kernel_sizes)
        self.head = LabelAttention(len(kernel_sizes) * num_filters, n_labels)

    def forward(self, input_ids: Tensor, mask: Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[batch, time]`` -> logits ``[batch, labels]``, attention ``[batch, labels, time]``."""
        embedded = self.embedding(input_ids, mask).transpose(1, 2)  # [B, E, T]
        keep = mask.unsqueeze(1).to(embedded.dtype)
        hidden = torch.cat([channel(embedded, keep) for channel in self.channels], dim=1).transpose(1, 2)
        logits, attention, vectors = self.head(hidden, mask)
        return CoderOutput(logits=logits, attention=attention, features=vectors)
