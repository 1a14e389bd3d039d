"""The transformer coder's network: a Hugging Face encoder, truncated ("trun") or hierarchical ("hier"), and its heads.

- trun: the first N tokens of a note in one ``[CLS] ... [SEP]`` row.
- hier: the note cut into segments; all segments of a batch go through the
  encoder in one pass, then either
  - a pooled head: one vector per segment (CLS or mean) -> a small transformer
    over the segment vectors of each note -> mean over segments -> linear, or
  - label-wise attention over the token states of all segments of the note laid
    end to end (PLM-ICD).

The label-wise attention head scores ``tanh(W h)`` against one query per
label; the softmax runs in float32 (:func:`medcoder.models.networks.heads.masked_softmax`),
which is what keeps it stable under bf16/fp16 autocast over thousands of positions.
Every module returns a :class:`CoderOutput` like the word-level coders.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from medcoder.errors import ConfigError
from medcoder.models.networks.heads import CoderOutput, LabelAttention, masked_mean_pool


class _HiddenStatesIn(nn.Module):
    """Stands in for an encoder's embedding layer: its input (``inputs_embeds``) is already hidden states."""

    def forward(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None, **_: Any) -> Tensor:
        assert inputs_embeds is not None
        return inputs_embeds


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-family encoder (``encoder.encoder.layer``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(getattr(encoder, "embeddings", None), nn.Module):
        raise ConfigError(
            f"freeze_layers needs an encoder with .embeddings and .encoder.layer (BERT, RoBERTa, ELECTRA...); "
            f"{type(encoder).__name__} has another layout"
        )
    return layers


def encoder_slice(encoder: nn.Module, start: int, stop: int, *, embed: bool) -> nn.Module:
    """A view of ``encoder`` running only layers ``start:stop`` (the same parameters, nothing copied).

    With ``embed`` the view takes token ids like the encoder; without, its
    ``inputs_embeds`` are the hidden states entering layer ``start``. The model's
    own forward still builds the attention mask, so every attention
    implementation of the encoder works unchanged.
    """
    layers = encoder_layers(encoder)
    view = copy.copy(encoder)
    view._modules = dict(encoder._modules)
    inner = copy.copy(encoder.encoder)
    inner._modules = dict(encoder.encoder._modules)
    inner.layer = nn.ModuleList(list(layers)[start:stop])
    view.encoder = inner
    if not embed:
        view.embeddings = _HiddenStatesIn()
    return view


class ProjectedLabelAttention(nn.Module):
    """PLM-ICD's head: label attention over ``tanh(W h)``, ``[batch, time, hidden]`` -> ``[batch, labels]``."""

    def __init__(
        self, hidden: int, n_labels: int, *, projection: int, dropout: float, shared: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = shared if shared is not None else nn.Linear(hidden, projection)
        self.attention = LabelAttention(projection, n_labels)

    @property
    def output_bias(self) -> nn.Parameter:
        return self.attention.output_bias

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        projected = torch.tanh(self.projection(self.dropout(states)))
        return self.attention(projected, mask)


class PooledHead(nn.Module):
    """Dropout -> linear: ``[batch, hidden]`` -> ``[batch, labels]`` (``output_bias`` for prior initialisation)."""

    def __init__(self, hidden: int, n_labels: int, *, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, n_labels)

    @property
    def output_bias(self) -> nn.Parameter:
        return self.linear.bias

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.dropout(features))


def _pool(states: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """``[n, time, hidden]`` -> ``[n, hidden]``: the first ([CLS]) state or the masked mean."""
    return states[:, 0] if pooling == "cls" else masked_mean_pool(states, mask)


class TransformerCoderModule(nn.Module):
    """Encoder + head for one architecture; see the module docstring.

    trun batches: input_ids/attention_mask/content_index ``[batch, time]``.
    hier batches: input_ids/attention_mask ``[segments, time]``, segment_doc and
    segment_slot ``[segments]``, content_index ``[batch, slots * time]``.

    Multi-task training adds ``aux_heads`` (one head of the same kind per ICD
    hierarchy level) and ``span_head`` (a per-token logit for "inside a coded
    evidence span"); their logits come back in ``CoderOutput.auxiliary``
    (``[batch, level labels]`` per level, ``spans``: ``[batch, positions]``
    aligned with content_index). :meth:`drop_auxiliary` removes them once trained.

    ``frozen_layers`` = k > 0 freezes the embeddings and the lowest k layers (kept
    in eval mode: no dropout). :meth:`frozen_states` gives their output for a
    batch, and a batch that carries it as ``frozen_states`` ``[rows, time,
    hidden]`` runs only the layers above: the coder computes the frozen part once
    per note and training pays for the top layers alone.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_labels: int,
        *,
        architecture: str,
        head: str,
        pooling: str,
        dropout: float,
        projection: int,
        segment_layers: int,
        aux_labels: dict[str, int] | None = None,
        span_tagging: bool = False,
        shared_projection: bool = False,
        frozen_layers: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen_layers = frozen_layers
        # views sharing the encoder's parameters, kept out of the module tree (no duplicate weights in state_dict)
        self._views: tuple[nn.Module, nn.Module] | None = None
        if frozen_layers:
            layers = encoder_layers(encoder)
            if frozen_layers > len(layers):
                raise ConfigError(f"freeze_layers is {frozen_layers} but the encoder has {len(layers)} layers")
            for module in [encoder.embeddings, *list(layers)[:frozen_layers]]:
                module.requires_grad_(False)
            self._views = (
                encoder_slice(encoder, 0, frozen_layers, embed=True),
                encoder_slice(encoder, frozen_layers, len(layers), embed=False),
            )
        self.architecture, self.head_kind, self.pooling = architecture, head, pooling
        hidden = int(encoder.config.hidden_size)

        def make_head(n: int, shared: nn.Linear | None = None) -> nn.Module:
            if head == "label_attention":
                return ProjectedLabelAttention(hidden, n, projection=projection, dropout=dropout, shared=shared)
            return PooledHead(hidden, n, dropout=dropout)

        self.head = make_head(n_labels)
        shared = self.head.projection if shared_projection and head == "label_attention" else None
        self.aux_heads = nn.ModuleDict({name: make_head(n, shared) for name, n in (aux_labels or {}).items()})
        self.span_head: nn.Module | None = nn.Linear(hidden, 1) if span_tagging else None
        self.segment_encoder: nn.Module | None = None
        if architecture == "hier" and head == "pooled":
            heads = next(h for h in (8, 4, 2, 1) if hidden % h == 0)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True, norm_first=True
            )
            self.segment_encoder = nn.TransformerEncoder(layer, segment_layers, enable_nested_tensor=False)

    def _frozen_modules(self) -> list[nn.Module]:
        if not self.frozen_layers:
            return []
        return [self.encoder.embeddings, *list(encoder_layers(self.encoder))[: self.frozen_layers]]

    def train(self, mode: bool = True) -> TransformerCoderModule:
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()  # frozen layers never drop out: their output is the cached one
        return self

    @torch.no_grad()
    def frozen_states(self, batch: dict[str, Tensor]) -> Tensor:
        """The hidden states leaving the frozen layers for a batch's rows ``[rows, time, hidden]``."""
        assert self._views is not None, "frozen_states needs frozen_layers > 0"
        return self._views[0](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state

    def drop_auxiliary(self) -> None:
        """Remove the auxiliary heads: what is left is the model a bundle stores."""
        self.aux_heads = nn.ModuleDict()
        self.span_head = None

    def _token_grid(self, states: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Token states laid out like content_index: ``[batch, positions, hidden]``."""
        if self.architecture == "trun":
            return states
        n_docs, positions = batch["content_index"].shape
        width = states.shape[1]
        grid = states.new_zeros(n_docs, positions // width, width, states.shape[-1])
        grid = grid.index_put((batch["segment_doc"], batch["segment_slot"]), states)
        return grid.reshape(n_docs, positions, -1)

    def _pooled_features(self, states: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """One vector per note ``[batch, hidden]``: pooled row (trun) or segment transformer + mean (hier)."""
        vectors = _pool(states, batch["attention_mask"], self.pooling)
        if self.architecture == "trun":
            return vectors
        n_docs, positions = batch["content_index"].shape
        doc, slot = batch["segment_doc"], batch["segment_slot"]
        n_slots = positions // states.shape[1]
        grid = vectors.new_zeros(n_docs, n_slots, vectors.shape[-1]).index_put((doc, slot), vectors)
        present = torch.zeros(n_docs, n_slots, dtype=torch.bool, device=grid.device)
        present = present.index_put((doc, slot), torch.ones_like(doc, dtype=torch.bool))
        assert self.segment_encoder is not None
        mixed = self.segment_encoder(grid, src_key_padding_mask=~present)
        return masked_mean_pool(mixed, present)

    def forward(self, batch: dict[str, Tensor]) -> CoderOutput:
        if "frozen_states" in batch and self._views is not None:
            top = self._views[1]
            states = top(inputs_embeds=batch["frozen_states"], attention_mask=batch["attention_mask"]).last_hidden_state
        else:
            states = self.encoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        needs_tokens = self.head_kind == "label_attention" or self.span_head is not None
        tokens = self._token_grid(states, batch) if needs_tokens else None
        token_mask = batch["content_index"] >= 0
        features = self._pooled_features(states, batch) if self.head_kind == "pooled" else None

        def run(head: nn.Module) -> tuple[Tensor, Tensor | None, Tensor]:
            if features is not None:
                return head(features), None, features
            return head(tokens, token_mask)

        logits, attention, vectors = run(self.head)
        auxiliary = {name: run(head)[0] for name, head in self.aux_heads.items()}
        if self.span_head is not None:
            auxiliary["spans"] = self.span_head(tokens).squeeze(-1)
        return CoderOutput(logits, attention, vectors, auxiliary or None)


def layerwise_param_groups(
    module: TransformerCoderModule, *, lr: float, decay: float, head_lr: float | None, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise LR decay: the top encoder layer gets ``lr``, each lower one ``decay`` times less.

    Embeddings sit below layer 0; everything outside the encoder (heads, the
    segment transformer) gets ``head_lr`` (default ``lr``). Biases and norms
    have no weight decay.
    """
    n_layers = int(getattr(module.encoder.config, "num_hidden_layers", 0))
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder."):
            depth = n_layers  # pooler/final norms: top
            if ".embeddings." in name or name.startswith("encoder.embeddings"):
                depth = 0
            else:
                parts = name.split(".")
                for i, part in enumerate(parts[:-1]):
                    if part in ("layer", "layers") and parts[i + 1].isdigit():
                        depth = int(parts[i + 1]) + 1
                        break
            group_lr = lr * decay ** (n_layers - min(depth, n_layers))
        else:
            group_lr = head_lr if head_lr is not None else lr
        key = (group_lr, weight_decay if param.ndim > 1 else 0.0)
        buckets.setdefault(key, []).append(param)
    return [{"params": params, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), params in sorted(buckets.items())]
