"""What the word-level torch coders share (TextCNN, CAML, DR-CAML, MultiResCNN, BiGRU): words in, a network out.

:class:`WordCoder` adds to :class:`~medcoder.models.torch_coder.TorchCoder` the
training vocabulary, word embeddings (random, in-domain word2vec, or a user's
vector file), tokenisation and truncation, word dropout, and character offsets
for attention evidence. A word-level model is a subclass that builds its
network (:meth:`WordCoder.network`, the shared arguments passed by
:meth:`WordCoder.word_network`), registered with its config class, which
extends :class:`WordModelConfig`.

Bundle files: ``model.safetensors`` (the members' weights) and ``words.json``
(the vocabulary, plus what a subclass adds with :meth:`WordCoder.words_extra`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from medcoder.config.base import PathText, Strict
from medcoder.config.train import TrainConfig
from medcoder.data.encoding import (
    EncodedCorpus,
    TokenStream,
    Vocab,
    collate,
    encode_corpus,
    encode_token_lists,
    tokenize,
    tokenize_with_offsets,
)
from medcoder.errors import BundleError, ConfigError
from medcoder.io import atomic_write_json, read_json_file
from medcoder.models.networks.heads import CoderOutput
from medcoder.models.torch_coder import TorchCoder, set_prior_bias

if TYPE_CHECKING:
    from medcoder.models.word_vectors import WordVectors

logger = logging.getLogger(__name__)

WORDS_FORMAT = "medcoder.words.v1"


class WordEncodingConfig(Strict):
    """Word-level input of the CNN/RNN coders."""

    max_tokens: int = Field(2500, ge=1)  # truncate notes to the first N tokens
    min_count: int = Field(2, ge=1)  # vocabulary: words seen at least this often in train
    max_vocab: int | None = Field(None, ge=2)
    lowercase: bool = True
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # share of tokens removed at train time


class Word2VecConfig(Strict):
    """In-domain word2vec (gensim) trained before the coder."""

    algorithm: Literal["cbow", "skipgram"] = "cbow"
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)
    corpus: PathText | None = None  # unlabeled JSONL ("text" field) used in addition to the training notes


class EmbeddingConfig(Strict):
    """Word embeddings: random, trained word2vec, or a .vec/.txt/.bin file a user brings."""

    init: Literal["random", "word2vec", "file"] = "random"
    dim: int = Field(100, ge=1)
    path: PathText | None = None
    word2vec: Word2VecConfig = Field(default_factory=Word2VecConfig)
    freeze: bool = False

    @model_validator(mode="after")
    def _path_for_files(self) -> EmbeddingConfig:
        if (self.init == "file") != (self.path is not None):
            raise ValueError("path is required by, and only allowed with, init: file")
        return self


class WordModelConfig(Strict):
    """Fields shared by every word-level torch coder; a model's config adds ``type`` and its own fields."""

    encoding: WordEncodingConfig = Field(default_factory=WordEncodingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ensemble: int = Field(1, ge=1)  # seeds seed..seed+ensemble-1; predictions are their mean
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class WordCoder(TorchCoder):
    """A word-level coder; a subclass supplies :meth:`network` (and :meth:`can_explain` when it has attention)."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "words.json")
    config: Any  # a WordModelConfig subclass

    # ------------------------------------------------- what a model supplies
    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        """An untrained network over ``self.vocab_``; ``pretrained`` ``[vocab, dim]`` initial embeddings (or None)."""
        raise NotImplementedError

    def word_network(
        self, network_class: Callable[..., torch.nn.Module], pretrained: np.ndarray | None, **own: Any
    ) -> torch.nn.Module:
        """``network_class`` built from the :class:`WordModelConfig` fields every word network takes (vocabulary,
        embedding, labels, dropout), plus the model's ``own`` arguments; for :meth:`network`."""
        cfg = self.config
        return network_class(
            len(self.vocab_),
            cfg.embedding.dim,
            self.n_labels,
            dropout=cfg.dropout,
            pretrained=pretrained,
            freeze_embedding=cfg.embedding.freeze,
            **own,
        )

    def words_extra(self) -> dict[str, Any]:
        """What else ``words.json`` holds (and :meth:`read_words_extra` reads back)."""
        return {}

    def read_words_extra(self, words: dict[str, Any], path: Path) -> None:
        """Read back :meth:`words_extra` (``path``: ``words.json``, for errors)."""

    def build_vocab(self, token_lists: Iterable[Sequence[str]]) -> Vocab:
        enc = self.config.encoding
        return Vocab.build(token_lists, min_count=enc.min_count, max_size=enc.max_vocab)

    def initial_embeddings(self, token_lists: Iterable[Sequence[str]]) -> np.ndarray | None:
        """Initial embedding rows ``[vocab, dim]`` for ``self.vocab_``, or None for a random start."""
        vectors = self.initial_word_vectors(token_lists)
        if vectors is None:
            return None
        matrix, coverage = vectors.embedding_matrix(self.vocab_, seed=self.seed)
        logger.info("word vectors cover %.1f%% of the %d-word vocabulary", 100 * coverage, len(self.vocab_))
        return matrix

    def initial_word_vectors(self, token_lists: Iterable[Sequence[str]]) -> WordVectors | None:
        """The word vectors ``embedding.init`` names (word2vec trained on ``token_lists`` + its corpus, or a
        file), or None for ``init: random``."""
        emb = self.config.embedding
        if emb.init == "random":
            return None
        from medcoder.models.word_vectors import load_word_vectors, train_word2vec

        if emb.init == "file":
            vectors = load_word_vectors(emb.path)
        else:
            from medcoder.data.dataset import read_unlabeled_texts

            w2v = emb.word2vec
            corpus = list(token_lists)  # word2vec makes several passes: the lists are made for it only
            if w2v.corpus is not None:
                lowercase = self.config.encoding.lowercase
                corpus = corpus + [tokenize(t, lowercase=lowercase) for t in read_unlabeled_texts(w2v.corpus)]
            # every other word2vec option is an argument of train_word2vec
            vectors = train_word2vec(corpus, dim=emb.dim, seed=self.seed, **w2v.model_dump(exclude={"corpus"}))
        if vectors.vectors.shape[1] != emb.dim:
            raise ConfigError(f"embedding.dim is {emb.dim} but the word vectors have {vectors.vectors.shape[1]}")
        return vectors

    # --------------------------------------------------- TorchCoder hooks
    def prepare(
        self, texts: Sequence[str], y: np.ndarray, *, spans: Sequence[Sequence[tuple[int, int]]] | None
    ) -> EncodedCorpus:
        del y, spans  # no auxiliary targets here
        enc = self.config.encoding
        token_lists = TokenStream(texts, lowercase=enc.lowercase)  # tokenized on each pass, never held
        self.vocab_ = self.build_vocab(token_lists)
        self._pretrained = self.initial_embeddings(token_lists)
        corpus = encode_token_lists(token_lists, self.vocab_, max_tokens=enc.max_tokens)
        logger.info(
            "vocabulary %d words; %d of %d notes truncated to %d tokens",
            len(self.vocab_),
            corpus.n_truncated,
            len(corpus),
            enc.max_tokens,
        )
        return corpus

    def encode(self, texts: Sequence[str]) -> EncodedCorpus:
        enc = self.config.encoding
        return encode_corpus(texts, self.vocab_, max_tokens=enc.max_tokens, lowercase=enc.lowercase)

    def batch(self, corpus: EncodedCorpus, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return collate(corpus, indices)

    def training_batch(
        self, corpus: EncodedCorpus, indices: Sequence[int], y: np.ndarray, *, seed: int, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        word_dropout = self.config.encoding.word_dropout
        return collate(corpus, indices, word_dropout=word_dropout, seed=seed, epoch=epoch, step=step, labels=y)

    def forward(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> CoderOutput:
        return network(batch["input_ids"], batch["mask"])

    def build_network(self, seed: int, *, y: np.ndarray | None) -> torch.nn.Module:
        torch.manual_seed(seed)
        network = self.network(getattr(self, "_pretrained", None) if y is not None else None)
        if y is not None and not self.single_label:
            _set_output_prior(network, y)
        return network

    def token_offsets(self, text: str, corpus: EncodedCorpus) -> list[tuple[int, int]]:
        enc = self.config.encoding
        return [(s, e) for _, s, e in tokenize_with_offsets(text, lowercase=enc.lowercase)][: enc.max_tokens]

    def save_state(self, directory: Path) -> None:
        atomic_write_json(
            directory / "words.json", {"format": WORDS_FORMAT, "tokens": self.vocab_.tokens, **self.words_extra()}
        )

    def load_state(self, directory: Path) -> None:
        path = directory / "words.json"
        words = read_json_file(path)
        if not isinstance(words, dict) or words.get("format") != WORDS_FORMAT:
            raise BundleError(f"{path}: not a medcoder word vocabulary")
        tokens = words.get("tokens")
        if not isinstance(tokens, list):
            raise BundleError(f"{path}: needs 'tokens' (a list)")
        try:
            self.vocab_ = Vocab(tokens)
        except ValueError as exc:
            raise BundleError(f"{path}: {exc}") from None
        self.read_words_extra(words, path)


def _set_output_prior(network: torch.nn.Module, y: np.ndarray) -> None:
    """Output biases at the label priors (see :func:`set_prior_bias`), wherever the network keeps them."""
    head = getattr(network, "head", None) or getattr(network, "output", None)
    bias = getattr(head, "output_bias", None)
    if bias is None:
        bias = getattr(getattr(head, "linear", None), "bias", None)
    if bias is not None:
        set_prior_bias(bias, y)
