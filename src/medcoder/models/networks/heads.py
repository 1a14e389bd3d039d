"""Output heads shared by the word-level coders, masking helpers, and attention evidence.

Every word-level coder (``cnn.py``, ``rnn.py``) maps ``input_ids`` ``[batch, time]``
and ``mask`` ``[batch, time]`` (True = real token) to a :class:`CoderOutput`.
Its last step is one of two heads defined here:

- :class:`PooledLinear`: one document vector ``[batch, features]`` -> dropout ->
  linear -> logits ``[batch, labels]``;
- :class:`LabelAttention` (CAML, Mullenbach et al. 2018): every label attends
  over the positions on its own, giving one document vector per label, scored
  by that label's own weight vector.

Masking rules kept by every helper here: padding positions get exactly zero
attention and can never win a max-pool, whatever the dtype (bf16 autocast
included), and a document with no real token yields zeros instead of NaN.

:func:`top_evidence` turns one document's attention ``[labels, time]`` into
character spans for ``predict --explain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class CoderOutput:
    """What a word-level coder returns.

    logits: ``[batch, labels]``, before sigmoid/softmax.
    attention: ``[batch, labels, time]`` label-wise attention weights (rows sum
        to 1 over real tokens, exactly 0 on padding), or None for pooled heads.
    features: the document features the output layer reads, for transfer and
        diagnostics: ``[batch, features]`` for pooled heads, ``[batch, labels,
        features]`` (one vector per label) for label attention.
    auxiliary: ``{task: logits}`` of multi-task training heads, else None.
    """

    logits: Tensor
    attention: Tensor | None = None
    features: Tensor | None = None
    auxiliary: dict[str, Tensor] | None = None  # multi-task models: logits of each auxiliary task


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis of ``scores`` ``[..., time]`` restricted to ``mask`` ``[..., time]``.

    Computed in float32 and cast back to the dtype of ``scores``: in bf16 the
    exponentials of long notes (thousands of positions) lose most of their
    mass to rounding, and -inf stays exact only in a float32 ``masked_fill``.
    A row with no real position would be all NaN after softmax; it is set to 0.
    """
    mask = mask.expand_as(scores)
    weights = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)
    return weights.masked_fill(~mask, 0.0).to(scores.dtype)


def masked_max_pool(x: Tensor, mask: Tensor) -> Tensor:
    """Max over time of ``x`` ``[batch, time, features]`` among real positions of ``mask`` ``[batch, time]``.

    Padding is filled with the most negative finite value of ``x``'s dtype (not
    -inf, which would turn into NaN in later arithmetic) so it never wins.
    Returns ``[batch, features]``; documents without real tokens get zeros.
    """
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    pooled = filled.max(dim=1).values
    return pooled.masked_fill(~mask.any(dim=1, keepdim=True), 0.0)


def masked_mean_pool(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real positions of ``x`` ``[batch, time, features]`` -> ``[batch, features]`` (0 for empty documents)."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp_min(1.0)
    return (x * weights).sum(dim=1) / counts


class PooledLinear(nn.Module):
    """Dropout -> linear on one pooled document vector: ``[batch, in_dim]`` -> logits ``[batch, n_labels]``.

    Weights are xavier-uniform, bias zero, like the label-attention head, so
    that swapping heads does not change the scale of the starting logits.
    """

    def __init__(self, in_dim: int, n_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_labels)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``[batch, in_dim]`` -> logits ``[batch, n_labels]``."""
        return self.linear(self.dropout(features))


class LabelAttention(nn.Module):
    """Label-wise attention and per-label output (CAML's head).

    For hidden states ``H`` ``[batch, time, in_dim]``:

    - scores ``U H^T`` ``[batch, labels, time]`` with ``U`` = ``attention_weight`` ``[labels, in_dim]``;
    - ``alpha`` = masked softmax over time (float32, see :func:`masked_softmax`);
    - label vectors ``V = alpha H`` ``[batch, labels, in_dim]`` (a batched matmul:
      no ``[batch, labels, time, in_dim]`` tensor is ever built, which with
      thousands of labels and long notes would not fit in memory);
    - ``logit_l = w_l . v_l + b_l`` with ``w`` = ``output_weight`` ``[labels, in_dim]``
      and ``b`` = ``output_bias`` ``[labels]``, computed as ``(V * W).sum(-1)``; for inputs
      shorter than ``in_dim`` positions as ``sum_t alpha_lt (w_l . h_t)`` instead, which never
      builds ``V`` (the label vectors then come back as None): with thousands of labels and
      short texts that is most of the head's time and memory.

    ``U`` and ``W`` are xavier-uniform (fan-in ``in_dim``, fan-out ``labels``),
    ``b`` starts at zero. ``output_weight`` is the ``beta`` that DR-CAML pulls
    towards the code-description embeddings.
    """

    def __init__(self, in_dim: int, n_labels: int) -> None:
        super().__init__()
        self.attention_weight = nn.Parameter(torch.empty(n_labels, in_dim))
        self.output_weight = nn.Parameter(torch.empty(n_labels, in_dim))
        self.output_bias = nn.Parameter(torch.zeros(n_labels))
        nn.init.xavier_uniform_(self.attention_weight)
        nn.init.xavier_uniform_(self.output_weight)

    def forward(self, hidden: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``hidden`` ``[batch, time, in_dim]``, ``mask`` ``[batch, time]`` ->
        (logits ``[batch, labels]``, attention ``[batch, labels, time]``, label vectors ``[batch, labels, in_dim]``
        or None when ``time`` < ``in_dim``)."""
        scores = torch.matmul(self.attention_weight, hidden.transpose(1, 2))  # [B, L, T]
        attention = masked_softmax(scores, mask.unsqueeze(1))
        if hidden.shape[1] < hidden.shape[2]:
            # Fewer positions than dimensions (short texts): w_l . (sum_t a_lt h_t) = sum_t a_lt (w_l . h_t),
            # so [B, L, T] tensors replace the [B, L, in_dim] label vectors, which are not built (None).
            values = torch.matmul(self.output_weight, hidden.transpose(1, 2))  # [B, L, T]
            logits = (attention.to(values.dtype) * values).sum(dim=-1) + self.output_bias
            return logits, attention, None
        # Under autocast the matmul runs in bf16; cast alpha to H's dtype so both agree.
        vectors = torch.bmm(attention.to(hidden.dtype), hidden)
        logits = (vectors * self.output_weight).sum(dim=-1) + self.output_bias
        return logits, attention, vectors


def top_evidence(
    attention: Tensor | np.ndarray,
    token_offsets: Sequence[tuple[int, int]],
    label_indices: Sequence[int],
    *,
    window: int = 5,
    top: int = 3,
) -> dict[int, list[tuple[int, int, float]]]:
    """The ``top`` strongest non-overlapping text spans behind each requested label.

    ``attention`` ``[labels, time]`` is one document's label-wise attention;
    ``token_offsets[t]`` = (start, end) character offsets of token ``t``. Only
    the first ``len(token_offsets)`` positions are read (the rest is padding).

    For each label, positions are visited from the highest attention down; a
    position not yet covered by a chosen span becomes the centre of a window of
    ``window`` tokens (``(window - 1) // 2`` before it, ``window // 2`` after),
    clipped at the document edges and trimmed so it does not overlap an
    earlier span (keeping a strong peak next to a chosen span visible rather than
    dropping it). A span's weight is the attention summed over its tokens.
    Positions with zero attention never start a span.

    Returns ``{label: [(char_start, char_end, weight), ...]}``, strongest weight
    first (ties: earlier text first), at most ``top`` spans per label.
    """
    if window < 1 or top < 1:
        raise ValueError(f"window and top must be >= 1, got window={window}, top={top}")
    weights = torch.as_tensor(attention).detach().float().cpu().numpy()
    if weights.ndim != 2:
        raise ValueError(f"attention must be [labels, time], got shape {tuple(weights.shape)}")
    n_tokens = min(weights.shape[1], len(token_offsets))
    before, after = (window - 1) // 2, window // 2
    evidence: dict[int, list[tuple[int, int, float]]] = {}
    for label in label_indices:
        if not 0 <= label < weights.shape[0]:
            raise ValueError(f"label index {label} out of range for attention with {weights.shape[0]} labels")
        row = weights[label, :n_tokens]
        chosen: list[tuple[int, int]] = []  # token ranges [first, last], inclusive
        # Stable sort: among equal attention the earlier position comes first.
        for centre in np.argsort(-row, kind="stable"):
            if len(chosen) == top or row[centre] <= 0.0:
                break
            centre = int(centre)
            if any(first <= centre <= last for first, last in chosen):
                continue
            first, last = max(0, centre - before), min(n_tokens - 1, centre + after)
            for other_first, other_last in chosen:
                if other_last < centre:
                    first = max(first, other_last + 1)
                else:
                    last = min(last, other_first - 1)
            chosen.append((first, last))
        spans = [
            (int(token_offsets[first][0]), int(token_offsets[last][1]), float(row[first : last + 1].sum()))
            for first, last in chosen
        ]
        evidence[label] = sorted(spans, key=lambda span: (-span[2], span[0]))
    return evidence
