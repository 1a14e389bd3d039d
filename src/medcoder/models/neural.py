"""Word-level torch coders (TextCNN, CAML, DR-CAML, MultiResCNN, BiGRU) as ``CodingModel``s.

This adapter owns what is common to them: the training vocabulary, word
embeddings (random, in-domain word2vec, or a user's vector file), encoding
and truncation, the shared training loop with early stopping on dev,
seed ensembles (the mean of the members' probabilities), saving to and
loading from a bundle, and attention evidence for explanations. The network
modules themselves live in ``cnn.py``, ``rnn.py`` and ``transfer.py``.

Bundle files: ``model.safetensors`` (every member's weights under
``member{m}.``, plus DR-CAML's description token ids) and ``words.json``
(vocabulary and the architecture facts needed to rebuild the modules).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medcoder.config import DrCamlConfig, NeuralCoderConfig, TextCnnConfig
from medcoder.data.encoding import (
    EncodedCorpus,
    LengthBucketPlan,
    Vocab,
    collate,
    encode_corpus,
    encode_token_lists,
    tokenize,
    tokenize_with_offsets,
)
from medcoder.errors import BundleError, ConfigError, MedcoderError
from medcoder.io import atomic_write_json, read_json_file
from medcoder.models.base import CodingModel, DevSet, Progress, TaskType
from medcoder.models.cnn import CAML, DRCAML, MultiResCNN, TextCNN
from medcoder.models.heads import top_evidence
from medcoder.models.rnn import BiGRU
from medcoder.models.torch_common import coder_loss, dev_metrics, member_record, set_prior_bias, stopping_config
from medcoder.models.transfer import TransferTextCNN, load_source_textcnn
from medcoder.registry import MODELS
from medcoder.training.loop import train_loop
from medcoder.training.precision import autocast_factory

logger = logging.getLogger(__name__)

WORDS_FORMAT = "medcoder.words.v1"
_PREDICT_BATCH = 32


class WordCoder(CodingModel):
    """A word-level torch coder; ``members_`` are the ensemble's modules (one unless ``ensemble`` > 1)."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "words.json")
    config: NeuralCoderConfig

    # ------------------------------------------------------------ building
    def _description_ids(self) -> torch.Tensor:
        """Token ids ``[n_labels, description_max_tokens]`` of each code's description (0 = padding)."""
        assert isinstance(self.config, DrCamlConfig)
        width = self.config.description_max_tokens
        ids = torch.zeros((self.n_labels, width), dtype=torch.long)
        descriptions = self.label_descriptions or [None] * self.n_labels
        for row, text in enumerate(descriptions):
            encoded = self.vocab_.encode(tokenize(text or "", lowercase=self.config.encoding.lowercase))[:width]
            ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        return ids

    def _build_module(self, seed: int, pretrained: np.ndarray | None) -> torch.nn.Module:
        """A fresh, seeded network for this config (the caller loads or trains its weights)."""
        torch.manual_seed(seed)
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
        size, dim, labels = len(self.vocab_), cfg.embedding.dim, self.n_labels
        common: dict[str, Any] = {
            "dropout": cfg.dropout,
            "pretrained": pretrained,
            "freeze_embedding": cfg.embedding.freeze,
        }
        if isinstance(cfg, TextCnnConfig):
            return TextCNN(size, dim, labels, kernel_sizes=cfg.filter_sizes, num_filters=cfg.num_filters, **common)
        if cfg.type == "drcaml.v1":
            return DRCAML(
                size,
                dim,
                labels,
                description_ids=self.description_ids_,
                lambda_=cfg.description_weight,
                kernel_size=cfg.kernel_size,
                num_filters=cfg.num_filters,
                **common,
            )
        if cfg.type == "caml.v1":
            return CAML(size, dim, labels, kernel_size=cfg.kernel_size, num_filters=cfg.num_filters, **common)
        if cfg.type == "multirescnn.v1":
            return MultiResCNN(size, dim, labels, kernel_sizes=cfg.filter_sizes, num_filters=cfg.num_filters, **common)
        if cfg.type == "bigru.v1":
            return BiGRU(size, dim, labels, hidden_size=cfg.hidden, num_layers=cfg.layers, output=cfg.output, **common)
        raise ConfigError(f"no word-level architecture for model type {cfg.type!r}")

    def _pretrained_matrix(self, token_lists: list[list[str]]) -> np.ndarray | None:
        """Initial embedding rows for the vocabulary, or None for a random start."""
        emb = self.config.embedding
        if emb.init == "random":
            return None
        from medcoder.models.embeddings import load_word_vectors, read_unlabeled_texts, train_word2vec

        if emb.init == "file":
            vectors = load_word_vectors(emb.path)
        else:
            w2v = emb.word2vec
            corpus = token_lists
            if w2v.corpus is not None:
                lowercase = self.config.encoding.lowercase
                corpus = corpus + [tokenize(t, lowercase=lowercase) for t in read_unlabeled_texts(w2v.corpus)]
            vectors = train_word2vec(
                corpus,
                dim=emb.dim,
                algorithm=w2v.algorithm,
                window=w2v.window,
                min_count=w2v.min_count,
                epochs=w2v.epochs,
                seed=self.seed,
            )
        if vectors.vectors.shape[1] != emb.dim:
            raise ConfigError(f"embedding.dim is {emb.dim} but the word vectors have {vectors.vectors.shape[1]}")
        matrix, coverage = vectors.embedding_matrix(self.vocab_, seed=self.seed)
        logger.info("word vectors cover %.1f%% of the %d-word vocabulary", 100 * coverage, len(self.vocab_))
        return matrix

    def _init_output_bias(self, module: torch.nn.Module, y: np.ndarray) -> None:
        """Output biases at the label priors (multi-label only; see :func:`set_prior_bias`)."""
        if self.single_label:
            return
        head = getattr(module, "head", None) or getattr(module, "output", None)
        bias = getattr(head, "output_bias", None)
        if bias is None:
            bias = getattr(getattr(head, "linear", None), "bias", None)
        if bias is not None:
            set_prior_bias(bias, y)

    # ------------------------------------------------------------ training
    def _loss(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = module(batch["input_ids"], batch["mask"]).logits
        loss = coder_loss(logits, batch["labels"], single_label=self.single_label)
        if isinstance(module, DRCAML):
            loss = loss + module.regularizer(batch["labels"])
        return loss

    def _dev_metrics(self, module: torch.nn.Module, corpus: EncodedCorpus, y: np.ndarray) -> dict[str, float]:
        return dev_metrics(self._scores([module], corpus), y, single_label=self.single_label)

    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        pairs: Sequence[str] | None = None,
        dev: DevSet | None = None,
        work_dir: Path | None = None,
        progress: Progress | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> WordCoder:
        del spans  # no span-tagging task here
        if pairs is not None or self.task == "pair":
            raise MedcoderError(f"{self.config.type} codes single texts; sentence pairs need tfidf_lr.v1")
        cfg = self.config
        train_config = stopping_config(cfg.train, single_label=self.single_label, task=self.task)
        self.stopping_metric_ = train_config.early_stopping_metric
        y = np.asarray(y, dtype=bool)
        lowercase = cfg.encoding.lowercase
        token_lists = [tokenize(text, lowercase=lowercase) for text in texts]
        if cfg.transfer is not None:
            self.source_, self.vocab_, self.source_info_ = load_source_textcnn(cfg.transfer.source)
        else:
            self.vocab_ = Vocab.build(token_lists, min_count=cfg.encoding.min_count, max_size=cfg.encoding.max_vocab)
        pretrained = None if cfg.transfer is not None else self._pretrained_matrix(token_lists)
        if isinstance(cfg, DrCamlConfig):
            self.description_ids_ = self._description_ids()
        corpus = encode_token_lists(token_lists, self.vocab_, max_tokens=cfg.encoding.max_tokens)
        logger.info(
            "vocabulary %d words; %d of %d notes truncated to %d tokens",
            len(self.vocab_),
            corpus.n_truncated,
            len(corpus),
            cfg.encoding.max_tokens,
        )
        evaluate = None
        if dev is not None:
            dev_corpus = encode_corpus(dev.texts, self.vocab_, max_tokens=cfg.encoding.max_tokens, lowercase=lowercase)
            dev_y = np.asarray(dev.y, dtype=bool)

            def evaluate(module: torch.nn.Module) -> dict[str, float]:
                return self._dev_metrics(module, dev_corpus, dev_y)

        self.members_, self.history_ = [], []
        for member in range(cfg.ensemble):
            seed = self.seed + member
            module = self._build_module(seed, pretrained)
            self._init_output_bias(module, y)
            plan = LengthBucketPlan(
                corpus.lengths, batch_size=cfg.train.batch_size, seed=seed, bucketing=cfg.train.length_bucketing
            )

            def make_batch(indices: list[int], epoch: int, step: int, seed: int = seed) -> dict[str, torch.Tensor]:
                return collate(
                    corpus, indices, word_dropout=cfg.encoding.word_dropout, seed=seed, epoch=epoch, step=step, labels=y
                )

            result = train_loop(
                module,
                plan,
                make_batch,
                self._loss,
                train_config,
                evaluate=evaluate,
                checkpoint_dir=None if work_dir is None else work_dir / f"member{member}",
                seed=seed,
                progress=progress,
            )
            module.eval()
            self.members_.append(module)
            self.history_.append(member_record(member, seed, result))
        return self

    def training_report(self) -> dict[str, Any]:
        return {"metric": getattr(self, "stopping_metric_", None), "members": getattr(self, "history_", [])}

    # ---------------------------------------------------------- prediction
    def _scores(self, modules: Sequence[torch.nn.Module], corpus: EncodedCorpus) -> np.ndarray:
        """Mean probability over ``modules``: float32 ``[n_docs, n_labels]``."""
        order = np.argsort(corpus.lengths, kind="stable")  # similar lengths together: little padding
        out = np.zeros((len(corpus), self.n_labels), dtype=np.float32)
        device = next(modules[0].parameters()).device
        with torch.inference_mode(), autocast_factory(self.config.train.precision, device)():
            for start in range(0, len(order), _PREDICT_BATCH):
                indices = order[start : start + _PREDICT_BATCH].tolist()
                batch = collate(corpus, indices)
                total = torch.zeros((len(indices), self.n_labels))
                for module in modules:
                    was_training = module.training
                    module.eval()
                    logits = module(batch["input_ids"], batch["mask"]).logits.float()
                    total += torch.softmax(logits, dim=1) if self.single_label else torch.sigmoid(logits)
                    module.train(was_training)
                out[indices] = (total / len(modules)).numpy()
        return out

    def _encode(self, texts: Sequence[str]) -> EncodedCorpus:
        enc = self.config.encoding
        return encode_corpus(texts, self.vocab_, max_tokens=enc.max_tokens, lowercase=enc.lowercase)

    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        if pairs is not None:
            raise MedcoderError(f"{self.config.type} codes single texts, not pairs")
        return self._scores(self.members_, self._encode(texts))

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, window: int = 5, top: int = 3
    ) -> list[dict[int, list[tuple[int, int, float]]]]:
        """Per note, the strongest character spans behind each requested label (attention models only)."""
        enc = self.config.encoding
        results = []
        with torch.inference_mode():
            for text, labels in zip(texts, label_indices, strict=True):
                corpus = self._encode([text])
                batch = collate(corpus, [0])
                attention = None
                for module in self.members_:
                    output = module(batch["input_ids"], batch["mask"])
                    if output.attention is None:
                        raise MedcoderError(f"{self.config.type} has no attention to explain its codes with")
                    attention = output.attention[0] if attention is None else attention + output.attention[0]
                offsets = [(s, e) for _, s, e in tokenize_with_offsets(text, lowercase=enc.lowercase)]
                offsets = offsets[: enc.max_tokens]
                mean_attention = attention.float() / len(self.members_)
                results.append(top_evidence(mean_attention, offsets, list(labels), window=window, top=top))
        return results

    # --------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for m, module in enumerate(self.members_):
            for name, tensor in module.state_dict().items():
                tensors[f"member{m}.{name}"] = tensor.detach().contiguous()
        if isinstance(self.config, DrCamlConfig):
            tensors["description_ids"] = self.description_ids_
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": f"medcoder.{self.config.type}"})
        words: dict[str, Any] = {"format": WORDS_FORMAT, "tokens": self.vocab_.tokens, "members": len(self.members_)}
        if self.config.transfer is not None:
            words["source"] = self.source_info_
        atomic_write_json(directory / "words.json", words)

    @classmethod
    def load(cls, directory: Path, config: NeuralCoderConfig, *, n_labels: int, task: TaskType) -> WordCoder:
        model = cls(config, n_labels=n_labels, task=task)
        words = read_json_file(directory / "words.json")
        if not isinstance(words, dict) or words.get("format") != WORDS_FORMAT:
            raise BundleError(f"{directory / 'words.json'}: not a medcoder word vocabulary")
        tokens, members = words.get("tokens"), words.get("members")
        if not isinstance(tokens, list) or not isinstance(members, int) or members < 1:
            raise BundleError(f"{directory / 'words.json'}: needs 'tokens' (list) and 'members' (int >= 1)")
        try:
            model.vocab_ = Vocab(tokens)
            tensors = load_file(str(directory / "model.safetensors"))
        except ValueError as exc:
            raise BundleError(f"{directory}: {exc}") from None
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BundleError(f"{directory / 'model.safetensors'}: unreadable weights ({exc})") from None
        if config.transfer is not None:
            model.source_info_ = words.get("source") or {}
            model.source_ = TransferTextCNN.source_skeleton(model.source_info_, len(model.vocab_))
        if isinstance(config, DrCamlConfig):
            if "description_ids" not in tensors:
                raise BundleError(f"{directory / 'model.safetensors'}: no description_ids for a DR-CAML model")
            model.description_ids_ = tensors["description_ids"]
        model.members_ = []
        for m in range(members):
            module = model._build_module(0, None)
            prefix = f"member{m}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise BundleError(f"{directory / 'model.safetensors'}: weights do not fit the config ({first})") from None
            module.eval()
            model.members_.append(module)
        return model


for _name in ("textcnn.v1", "caml.v1", "drcaml.v1", "multirescnn.v1", "bigru.v1"):
    MODELS.register(_name)(WordCoder)
