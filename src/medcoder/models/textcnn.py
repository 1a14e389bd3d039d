"""``textcnn.v1``: Kim's CNN, optionally built on a source-task TextCNN (transfer learning).

With ``transfer``, the embeddings and convolutions come from a TextCNN bundle
trained on a source task, each ``frozen`` or ``tuned``, or ``dual``: a tuned
copy beside a frozen one (:class:`TransferTextCNN`).

The vocabulary of a transfer model (``transfer.vocabulary``):

- ``source``: the source model's vocabulary; target words it lacks are ``<unk>``.
- ``merged`` (default): the source vocabulary followed by the target training
  split's words (the target's own ``encoding.min_count``/``max_vocab`` rule)
  that the source lacks. Source rows keep their trained vectors. New rows start
  from the target's own ``embedding.init``: word2vec (or file) vectors mapped
  into the source embedding space by a scaled orthogonal Procrustes fit on the
  words both share (``align_new_rows``; independently trained vector spaces are
  arbitrarily rotated against each other, and the source convolutions read the
  source space), or, for ``init: random`` and words without a vector, a normal
  draw at the source table's scale. Under ``embeddings: frozen`` the source
  rows stay frozen and the new rows are trained (see
  :class:`~medcoder.models.networks.transfer.MergedEmbedding`).

``words.json`` records the vocabulary (merged) and, in ``source``, the source
vocabulary's size, so a saved model rebuilds the same two tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from medcoder.models.word_vectors import WordVectors

logger = logging.getLogger(__name__)


class TransferConfig(Strict):
    """Source task -> target task: reuse a trained TextCNN's embeddings (EM) and convolutions (CV)."""

    source: PathText  # a TextCNN model directory trained on the source task
    embeddings: Literal["frozen", "tuned"] = "frozen"
    convolutions: Literal["frozen", "tuned", "dual"] = "tuned"  # dual: a tuned copy beside a frozen copy
    # the new layer between source features and the new output; null: none (the output reads the features)
    adaptation_dim: int | None = Field(256, ge=1)
    # merged: source vocabulary + the target train split's words it lacks (new rows trained); source: old behaviour
    vocabulary: Literal["source", "merged"] = "merged"
    align_new_rows: bool = True  # merged: map the target's word vectors into the source space (Procrustes)


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

    def build_vocab(self, token_lists: Iterable[Sequence[str]]) -> Vocab:
        transfer = self.config.transfer
        if transfer is None:
            return super().build_vocab(token_lists)
        self.source_, vocab, self.source_info_ = load_source_textcnn(transfer.source)
        self.source_info_["vocabulary"] = transfer.vocabulary
        self.source_info_["source_words"] = len(vocab)
        if transfer.vocabulary == "source":
            return vocab
        merged = merge_vocab(vocab, super().build_vocab(token_lists))
        logger.info(
            "merged vocabulary: %d source words + %d target words the source lacks",
            len(vocab),
            len(merged) - len(vocab),
        )
        return merged

    def initial_embeddings(self, token_lists: Iterable[Sequence[str]]) -> np.ndarray | None:
        """Without transfer, the usual start; with a merged vocabulary, the rows of the new words ``[N, E]``."""
        transfer = self.config.transfer
        if transfer is None:
            return super().initial_embeddings(token_lists)
        if transfer.vocabulary == "source":
            return None
        n_source = int(self.source_info_["source_words"])
        source_table = self.source_.embedding.embedding.weight.detach().cpu().numpy()
        vectors = self.initial_word_vectors(token_lists)
        if vectors is not None and vectors.dim != source_table.shape[1]:
            raise ConfigError(
                f"transfer: the target's word vectors have {vectors.dim} dimensions, "
                f"the source embedding {source_table.shape[1]}"
            )
        rows, facts = new_word_rows(
            self.vocab_.tokens, n_source, source_table, vectors, seed=self.seed, align=transfer.align_new_rows
        )
        logger.info("new vocabulary rows: %s", facts)
        return rows

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        if cfg.transfer is not None:
            new_rows = None
            if cfg.transfer.vocabulary == "merged":
                n_new = len(self.vocab_) - int(self.source_info_["source_words"])
                # a saved model (pretrained None) gets placeholders, then its trained weights
                new_rows = pretrained if pretrained is not None else np.zeros((n_new, self.source_.embedding.dim))
            return TransferTextCNN(
                self.source_,
                self.n_labels,
                embeddings=cfg.transfer.embeddings,
                convolutions=cfg.transfer.convolutions,
                adaptation_dim=cfg.transfer.adaptation_dim,
                dropout=cfg.dropout,
                new_rows=new_rows,
            )
        return self.word_network(TextCNN, pretrained, kernel_sizes=cfg.filter_sizes, num_filters=cfg.num_filters)

    def words_extra(self) -> dict[str, Any]:
        return {"source": self.source_info_} if self.config.transfer is not None else {}

    def read_words_extra(self, words: dict[str, Any], path: Path) -> None:
        if self.config.transfer is None:
            return
        info = words.get("source")
        if not isinstance(info, dict) or not {"embedding_dim", "kernel_sizes", "num_filters"} <= set(info):
            raise BundleError(f"{path}: a transfer model needs 'source' with the source network's shape")
        vocabulary = info.get("vocabulary", "source")  # a bundle from before merged vocabularies: source
        if vocabulary != self.config.transfer.vocabulary:
            raise BundleError(
                f"{path}: the weights use the {vocabulary} vocabulary, the config says {self.config.transfer.vocabulary}"
            )
        n_source = int(info.get("source_words", len(self.vocab_)))
        if not 2 <= n_source <= len(self.vocab_) or (vocabulary == "source" and n_source != len(self.vocab_)):
            raise BundleError(f"{path}: source_words {n_source} does not fit the {len(self.vocab_)}-word vocabulary")
        self.source_info_ = info
        self.source_ = source_skeleton(info, n_source)


def merge_vocab(source: Vocab, target: Vocab) -> Vocab:
    """``source``'s words (same ids), then ``target``'s words that ``source`` lacks, in ``target``'s order."""
    known = set(source.tokens)
    return Vocab(
        [*source.tokens, *(t for t in target.tokens[2:] if t not in known)],
        min_count=target.min_count,
        max_size=None,
    )


def new_word_rows(
    tokens: list[str],
    n_source: int,
    source_table: np.ndarray,
    vectors: WordVectors | None,
    *,
    seed: int,
    align: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Initial rows ``[len(tokens) - n_source, E]`` for the words after the source's, and what was done.

    With ``vectors`` (the target's word2vec or file vectors) a new word takes its vector, mapped into
    the source table's space when ``align``: ``x -> s * x @ W`` with ``W`` the orthogonal least-squares
    fit (orthogonal Procrustes) of the shared words' vectors onto their source rows and ``s`` the ratio of
    their RMS norms (source / target), so new rows start at the size of the source rows.
    Words without a vector, and every word when ``vectors`` is None, are drawn from a seeded normal at
    the standard deviation of the source table.
    """
    dim = source_table.shape[1]
    scale = float(source_table[2:n_source].std()) if n_source > 2 else 0.1
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.0, scale, size=(len(tokens) - n_source, dim)).astype(np.float32)
    facts: dict[str, Any] = {"new_words": len(rows), "with_vector": 0, "aligned_on": 0}
    if vectors is None or not len(rows):
        return rows, facts
    index = {token: i for i, token in enumerate(vectors.tokens)}
    shared = [(row, index[token]) for row, token in enumerate(tokens[2:n_source], start=2) if token in index]
    mapping = np.eye(dim, dtype=np.float32)
    if align and len(shared) >= dim:
        x = vectors.vectors[[i for _, i in shared]].astype(np.float64)
        y = source_table[[r for r, _ in shared]].astype(np.float64)
        u, sigma, vt = np.linalg.svd(x.T @ y)
        rotation = u @ vt
        # the scale matches the two sets' sizes (RMS norm), not the least-squares scale, which shrinks
        # the new rows towards zero when the fit is poor: a small row never wins a max-pool
        mapping = (np.sqrt((y * y).sum() / (x * x).sum()) * rotation).astype(np.float32)
        fitted = x @ mapping
        facts["aligned_on"] = len(shared)
        facts["fit_r2"] = round(float(1 - ((fitted - y) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()), 3)
    for row, token in enumerate(tokens[n_source:]):
        found = index.get(token)
        if found is not None:
            rows[row] = vectors.vectors[found] @ mapping
            facts["with_vector"] += 1
    return rows, facts


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
    from medcoder.models.bundle import read_model

    config, labels, model = read_model(path)
    if not isinstance(model, TextCnnCoder) or model.config.transfer is not None:
        raise ConfigError(
            f"transfer.source {path}: expected a textcnn.v1 model trained from scratch, found {model.name}"
        )
    source = model.members_[0]
    info = {
        "path": str(path),
        "task": config.task.type,
        "n_labels": len(labels),
        "embedding_dim": source.embedding.dim,
        "kernel_sizes": [conv.kernel_size[0] for conv in source.convs],
        "num_filters": source.convs[0].out_channels,
    }
    return source, model.vocab_, info
