"""``textcnn.v1``: Kim's CNN, optionally built on a source-task TextCNN (transfer learning).

With ``transfer``, the embeddings and convolutions come from a TextCNN bundle
trained on a source task (its vocabulary too), each ``frozen`` or ``tuned``, or
``dual``: a tuned copy beside a frozen one (:class:`TransferTextCNN`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from medcoder.config.base import PathText, Strict
from medcoder.data.encoding import Vocab
from medcoder.errors import BundleError, ConfigError
from medcoder.models.networks.cnn import TextCNN
from medcoder.models.networks.transfer import TransferTextCNN
from medcoder.models.word import WordCoder, WordModelConfig
from medcoder.registry import MODELS


class TransferConfig(Strict):
    """Source task -> target task: reuse a trained TextCNN's embeddings (EM) and convolutions (CV)."""

    source: PathText  # a TextCNN model directory trained on the source task
    embeddings: Literal["frozen", "tuned"] = "frozen"
    convolutions: Literal["frozen", "tuned", "dual"] = "tuned"  # dual: a tuned copy beside a frozen copy
    adaptation_dim: int = Field(256, ge=1)  # the new layer between source features and the new output


class TextCnnConfig(WordModelConfig):
    """Kim (2014): parallel convolutions, max-over-time pooling, linear output."""

    type: Literal["textcnn.v1"] = "textcnn.v1"
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = Field(100, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    transfer: TransferConfig | None = None


@MODELS.register("textcnn.v1", config=TextCnnConfig)
class TextCnnCoder(WordCoder):
    """TextCNN; with ``transfer`` the source model's vocabulary and feature extractor."""

    config: TextCnnConfig

    def build_vocab(self, token_lists: list[list[str]]) -> Vocab:
        if self.config.transfer is None:
            return super().build_vocab(token_lists)
        self.source_, vocab, self.source_info_ = load_source_textcnn(self.config.transfer.source)
        return vocab

    def initial_embeddings(self, token_lists: list[list[str]]) -> np.ndarray | None:
        return None if self.config.transfer is not None else super().initial_embeddings(token_lists)

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        if cfg.transfer is not None:
            return TransferTextCNN(
                self.source_,
                self.n_labels,
                embeddings=cfg.transfer.embeddings,
                convolutions=cfg.transfer.convolutions,
                adaptation_dim=cfg.transfer.adaptation_dim,
                dropout=cfg.dropout,
            )
        return TextCNN(
            len(self.vocab_),
            cfg.embedding.dim,
            self.n_labels,
            kernel_sizes=cfg.filter_sizes,
            num_filters=cfg.num_filters,
            dropout=cfg.dropout,
            pretrained=pretrained,
            freeze_embedding=cfg.embedding.freeze,
        )

    def words_extra(self) -> dict[str, Any]:
        return {"source": self.source_info_} if self.config.transfer is not None else {}

    def read_words_extra(self, words: dict[str, Any], path: Path) -> None:
        if self.config.transfer is None:
            return
        info = words.get("source")
        if not isinstance(info, dict) or not {"embedding_dim", "kernel_sizes", "num_filters"} <= set(info):
            raise BundleError(f"{path}: a transfer model needs 'source' with the source network's shape")
        self.source_info_ = info
        self.source_ = source_skeleton(info, len(self.vocab_))


def source_skeleton(info: dict[str, Any], vocab_size: int) -> TextCNN:
    """An untrained TextCNN of the source's shape; its weights are then loaded from the bundle."""
    return TextCNN(
        vocab_size,
        int(info["embedding_dim"]),
        1,
        kernel_sizes=tuple(info["kernel_sizes"]),
        num_filters=int(info["num_filters"]),
    )


def load_source_textcnn(path: str | Path) -> tuple[TextCNN, Vocab, dict[str, Any]]:
    """The first member of a TextCNN bundle trained on a source task, its vocabulary and shape facts."""
    from medcoder.models.bundle import load_bundle

    bundle = load_bundle(path)
    model = bundle.model
    if not isinstance(model, TextCnnCoder) or model.config.transfer is not None:
        raise ConfigError(
            f"transfer.source {path}: expected a textcnn.v1 model trained from scratch, found {model.name}"
        )
    source = model.members_[0]
    info = {
        "path": str(path),
        "task": bundle.config.task.type,
        "n_labels": len(bundle.labels),
        "embedding_dim": source.embedding.dim,
        "kernel_sizes": [conv.kernel_size[0] for conv in source.convs],
        "num_filters": source.convs[0].out_channels,
    }
    return source, model.vocab_, info
