"""``transformer.v1``: any Hugging Face encoder, truncated or hierarchical, with a pooled or label-wise attention head.

This coder owns the tokenizer, truncation or segmentation of notes (``trun``:
the first ``max_tokens``; ``hier``: every segment of ``segment_length``), a
larger learning rate for the new heads than for the encoder (with optional
layer-wise decay), label weights started from the code descriptions, and the
multi-task heads of stage 2 (ICD hierarchy levels, evidence-span tagging), which
shape the encoder during training and are dropped before saving. The network is
:class:`medcoder.models.networks.transformer.TransformerCoderModule`; the loop,
ensembles, scoring, evidence and weights are :class:`TorchCoder`'s.

Bundle files: ``model.safetensors`` (encoder + head weights of each member) and
``encoder/`` (the encoder's Hugging Face ``config.json`` and tokenizer files),
so a bundle loads offline whatever hub id it was trained from, and serves as
``encoder:`` of the next stage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from medcoder.config.base import Strict
from medcoder.config.train import TrainConfig
from medcoder.data.subwords import EncodedSubwords, SubwordEncoder, collate_segments, collate_truncated
from medcoder.errors import MedcoderError
from medcoder.models.hf_encoders import (
    load_config_and_tokenizer,
    load_encoder,
    load_tokenizer,
    row_limit,
    save_encoder_files,
)
from medcoder.models.networks.heads import masked_mean_pool
from medcoder.models.networks.transformer import ProjectedLabelAttention, TransformerCoderModule, layerwise_param_groups
from medcoder.models.torch_coder import TorchCoder, coder_loss, set_prior_bias
from medcoder.registry import MODELS

logger = logging.getLogger(__name__)

_CACHE_TOKENS = 8192  # rows x width of one batch through the frozen layers when caching their output


def _transformer_train() -> TrainConfig:
    # Fine-tuning defaults from the literature: small LR, warmup, few epochs.
    return TrainConfig(epochs=10, batch_size=8, lr=5e-5, warmup_ratio=0.1, weight_decay=0.01, early_stopping_patience=3)


class AuxiliaryTasksConfig(Strict):
    """Multi-task training: auxiliary heads on the shared encoder, one weighted combined loss.

    Only the main (full-code) head is kept in the bundle; the auxiliary tasks
    shape the encoder during training.
    """

    # ICD hierarchy heads beside the full-code head (targets: the ancestors of each note's codes)
    levels: list[Literal["chapter", "block", "category"]] = Field(default_factory=list)
    level_weight: float = Field(0.5, ge=0.0)
    # label attention: the level heads use the main head's projection tanh(W h) instead of their own, so the
    # levels shape what the code head sees even when the encoder is frozen (freeze_layers = all)
    shared_projection: bool = False
    # token tagging of the coded evidence spans, on notes that carry span annotations
    span_tagging: bool = False
    span_weight: float = Field(0.5, ge=0.0)

    @model_validator(mode="after")
    def _something_to_do(self) -> AuxiliaryTasksConfig:
        if not self.levels and not self.span_tagging:
            raise ValueError("auxiliary needs levels and/or span_tagging: true")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError("auxiliary.levels must not repeat a level")
        return self


class KnowledgeTaskConfig(Strict):
    """The ICD-knowledge task (:mod:`medcoder.data.knowledge`): catalog texts of every label mixed into training.

    With ``labels.catalog_codes`` the label space holds codes no training note
    carries; these texts are their only positive examples.
    """

    terms_per_code: int = Field(1, ge=0)  # inclusion terms / "includes" notes per code
    synthetic_per_code: int = Field(1, ge=0)  # template sentences pairing the code with another of its chapter
    seed: int = 0


class TransformerCoderConfig(Strict):
    """A Hugging Face encoder, truncated or hierarchical, with a pooled or label-wise attention head."""

    type: Literal["transformer.v1"] = "transformer.v1"
    encoder: str = "minilm"  # hub id, local folder, a transformer.v1 bundle, or "minilm" (the packaged MiniLM-L6)
    architecture: Literal["trun", "hier"] = "trun"
    head: Literal["pooled", "label_attention"] = "label_attention"
    pooling: Literal["cls", "mean"] = "cls"  # pooled head (trun) / segment vectors (hier)
    max_tokens: int = Field(512, ge=3)  # trun: the whole row incl. [CLS]/[SEP]; hier: content tokens of a note
    segment_length: int = Field(128, ge=3)  # hier: tokens per segment incl. [CLS]/[SEP]
    segment_stride: int | None = Field(None, ge=1)  # hier: content tokens between segment starts; None: no overlap
    segment_layers: int = Field(1, ge=1)  # hier + pooled: layers of the transformer over segment vectors
    projection: int = Field(256, ge=1)  # label attention: size of tanh(W h)
    # descriptions: each label's attention query and output weights start from the encoder's
    # embedding of its code description (the label space's catalog), instead of random
    label_init: Literal["random", "descriptions"] = "random"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # before the head
    # None keeps the checkpoint's value; 0 is the default because at 512 tokens on CPU it costs > 2x
    attention_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # each lower encoder layer trains at this x the LR above
    head_lr: float | None = Field(1e-3, gt=0.0)  # heads start from scratch: a larger LR; None: train.lr
    gradient_checkpointing: bool = False
    # freeze the embeddings and the lowest N encoder layers; during training their output is computed once
    # per note and kept in memory, so each step runs only the layers above (6-layer MiniLM, N=4: ~3x faster)
    freeze_layers: int = Field(0, ge=0)
    auxiliary: AuxiliaryTasksConfig | None = None  # multi-task training (stage 2)
    knowledge: KnowledgeTaskConfig | None = None  # the ICD-knowledge task mixed into training
    ensemble: int = Field(1, ge=1)  # seeds seed..seed+ensemble-1; predictions are their mean
    train: TrainConfig = Field(default_factory=_transformer_train)

    @model_validator(mode="after")
    def _segments_fit(self) -> TransformerCoderConfig:
        if self.segment_stride is not None and self.segment_stride > self.segment_length - 2:
            raise ValueError(f"segment_stride must be at most segment_length - 2 = {self.segment_length - 2}")
        return self


@MODELS.register("transformer.v1", config=TransformerCoderConfig)
class TransformerCoder(TorchCoder):
    """A Hugging Face encoder + pooled or label-attention head, truncated or hierarchical."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "encoder/config.json")
    requires: ClassVar[tuple[str, ...]] = ("numpy", "safetensors", "torch", "transformers", "tokenizers")
    predict_batch_size: ClassVar[int] = 16
    config: TransformerCoderConfig

    def can_explain(self) -> bool:
        return self.config.head == "label_attention"

    # ------------------------------------------------------------ building
    def _set_tokenizer(self, hf_config: Any, tokenizer: Any) -> None:
        cfg = self.config
        try:
            self.subwords_ = SubwordEncoder(tokenizer)
        except ValueError as exc:
            raise MedcoderError(f"encoder {cfg.encoder!r}: {exc}") from None
        self.tokenizer_ = tokenizer
        limit = row_limit(hf_config)
        width = cfg.max_tokens if cfg.architecture == "trun" else cfg.segment_length
        if limit is not None and width > limit:
            raise MedcoderError(
                f"encoder {cfg.encoder!r} takes at most {limit} tokens per row; "
                f"{'max_tokens' if cfg.architecture == 'trun' else 'segment_length'} is {width}"
            )

    def prepare(
        self, texts: Sequence[str], y: np.ndarray, *, spans: Sequence[Sequence[tuple[int, int]]] | None
    ) -> EncodedSubwords:
        cfg = self.config
        self._levels = self._level_targets(y)
        span_tagging = cfg.auxiliary is not None and cfg.auxiliary.span_tagging
        if span_tagging and not (spans and any(spans)):
            logger.warning("auxiliary.span_tagging: no training note carries evidence spans; the task is skipped")
            span_tagging = False
        self._set_tokenizer(*load_tokenizer(cfg.encoder))
        corpus = self.encode(texts)
        logger.info("%d of %d notes truncated to %d tokens", corpus.n_truncated, len(corpus), cfg.max_tokens)
        self._span_tags = self._token_tags(corpus, spans) if span_tagging and spans is not None else None
        self.auxiliary_ = {
            "levels": {name: t.shape[1] for name, t in self._levels.items()},
            "span_tagging": span_tagging,
        }
        return corpus

    def build_network(self, seed: int, *, y: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        torch.manual_seed(seed)
        training = y is not None
        location = cfg.encoder if training else str(self.encoder_dir_)
        encoder, _ = load_encoder(location, attention_dropout=cfg.attention_dropout, pretrained=training)
        network = TransformerCoderModule(
            encoder,
            self.n_labels,
            architecture=cfg.architecture,
            head=cfg.head,
            pooling=cfg.pooling,
            dropout=cfg.dropout,
            projection=cfg.projection,
            segment_layers=cfg.segment_layers,
            aux_labels=self.auxiliary_["levels"] if training else None,
            span_tagging=bool(self.auxiliary_["span_tagging"]) if training else False,
            shared_projection=cfg.auxiliary is not None and cfg.auxiliary.shared_projection,
            frozen_layers=cfg.freeze_layers,
        )
        if not training:
            return network
        if cfg.freeze_layers and getattr(self, "_cache_network", None) is None:
            # every member starts from the same pretrained (frozen) lower layers: one cache serves them all
            self._cache_network = network
        if cfg.gradient_checkpointing:
            network.encoder.gradient_checkpointing_enable()
        if cfg.label_init == "descriptions":
            self._init_from_descriptions(network)
        if not self.single_label:
            set_prior_bias(network.head.output_bias, y)
            for name, target in self._levels.items():
                set_prior_bias(network.aux_heads[name].output_bias, target)
        return network

    def finish_network(self, network: torch.nn.Module) -> None:
        if self.config.gradient_checkpointing:
            network.encoder.gradient_checkpointing_disable()
        network.drop_auxiliary()

    def param_groups(self, network: torch.nn.Module) -> list[dict[str, Any]] | None:
        cfg = self.config
        return layerwise_param_groups(
            network, lr=cfg.train.lr, decay=cfg.layer_lr_decay, head_lr=cfg.head_lr, weight_decay=cfg.train.weight_decay
        )

    def _level_targets(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Per auxiliary ICD level, bool ``[n_docs, level codes]``: the ancestors of each note's codes."""
        aux = self.config.auxiliary
        if aux is None or not aux.levels:
            return {}
        if self.single_label or self.label_codes is None or self.label_system not in ("icd10cm", "icd10pcs", "icd9cm"):
            raise MedcoderError(
                "auxiliary.levels needs a multi-label task whose labels are ICD codes "
                "(labels.system icd10cm, icd10pcs or icd9cm)"
            )
        from medcoder.data.icd import code_at_level

        targets = {}
        for level in aux.levels:
            ancestors = [code_at_level(code, self.label_system, level) for code in self.label_codes]
            names = sorted({a for a in ancestors if a})
            column = {name: j for j, name in enumerate(names)}
            mapping = np.zeros((len(ancestors), len(names)), dtype=np.float32)
            for i, ancestor in enumerate(ancestors):
                if ancestor:
                    mapping[i, column[ancestor]] = 1.0
            targets[level] = (y.astype(np.float32) @ mapping) > 0
            logger.info("auxiliary task: %d %s codes", len(names), level)
        return targets

    @staticmethod
    def _token_tags(corpus: EncodedSubwords, spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray | None]:
        """Per note, 1/0 for each content token inside/outside a coded span; None for notes without spans."""
        tags: list[np.ndarray | None] = []
        for offsets, note_spans in zip(corpus.offsets, spans, strict=True):
            if not note_spans:
                tags.append(None)
                continue
            inside = np.zeros(len(offsets), dtype=np.float32)
            for start, end in note_spans:
                inside[(offsets[:, 0] < end) & (offsets[:, 1] > start)] = 1.0
            tags.append(inside)
        return tags

    def _describe_labels(self, network: TransformerCoderModule) -> torch.Tensor:
        """The encoder's mean token state of each label's description (its code when it has none): ``[labels, hidden]``."""
        descriptions = self.label_descriptions or [None] * self.n_labels
        codes = self.label_codes or [""] * self.n_labels
        texts = [d or c or "" for d, c in zip(descriptions, codes, strict=True)]
        corpus = self.subwords_.encode(texts, max_tokens=32)
        encoder = network.encoder
        vectors = []
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                batch = collate_truncated(self.subwords_, corpus.ids, range(start, min(start + 64, len(texts))))
                states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                vectors.append(masked_mean_pool(states, batch["content_index"] >= 0))
        encoder.train(was_training)
        return torch.cat(vectors)

    def _init_from_descriptions(self, network: TransformerCoderModule) -> None:
        """Label queries/weights along the description embeddings, at the norm the random init had.

        Label attention: the query and output weight of label ``l`` become
        ``tanh(W d_l)`` (``d_l`` its description's embedding, ``W`` the head's
        projection), so the positions that resemble the description get the
        attention from the first step. Pooled head: the output weights become ``d_l``.
        """
        if not self.label_descriptions and not self.label_codes:
            raise MedcoderError("label_init: descriptions needs the label space's descriptions (an ICD label system)")
        head = network.head
        vectors = self._describe_labels(network)
        with torch.no_grad():
            if isinstance(head, ProjectedLabelAttention):
                directions = torch.tanh(head.projection(vectors))
                targets = [head.attention.attention_weight, head.attention.output_weight]
            else:
                directions = vectors
                targets = [head.linear.weight]
            unit = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-8)
            for weight in targets:
                weight.copy_(unit * weight.norm(dim=1, keepdim=True).mean())
        logger.info("label weights initialised from %d code descriptions", len(vectors))

    def fit(self, texts: Sequence[str], y: np.ndarray, **kwargs: Any) -> TransformerCoder:
        self._cache_network: TransformerCoderModule | None = None
        self._frozen_cache: dict[int, tuple[EncodedSubwords, list[list[torch.Tensor]]]] = {}
        if self.config.knowledge is not None:
            texts, y, kwargs["spans"] = self._with_knowledge(texts, np.asarray(y, dtype=bool), kwargs.get("spans"))
        try:
            super().fit(texts, y, **kwargs)
        finally:  # the cache is for training only: prediction runs the whole encoder
            self._cache_network = None
            self._frozen_cache = {}
        return self

    def _with_knowledge(
        self, texts: Sequence[str], y: np.ndarray, spans: Sequence[Sequence[tuple[int, int]]] | None
    ) -> tuple[list[str], np.ndarray, list[Sequence[tuple[int, int]]] | None]:
        """The training notes followed by the knowledge task's catalog texts (targets: the codes they describe)."""
        from medcoder.data.knowledge import knowledge_texts

        knowledge = self.config.knowledge
        assert knowledge is not None
        if self.single_label or not self.label_codes or self.label_system not in ("icd10cm", "icd10pcs", "icd9cm"):
            raise MedcoderError("knowledge needs a multi-label task whose labels are ICD codes (labels.system)")
        descriptions = self.label_descriptions or [None] * self.n_labels
        extra, labels = knowledge_texts(
            self.label_codes,
            descriptions,
            system=self.label_system,
            terms_per_code=knowledge.terms_per_code,
            synthetic_per_code=knowledge.synthetic_per_code,
            seed=knowledge.seed,
        )
        targets = np.zeros((len(extra), self.n_labels), dtype=bool)
        for row, indices in enumerate(labels):
            targets[row, indices] = True
        unseen = int((~y.any(axis=0) & targets.any(axis=0)).sum())
        logger.info(
            "knowledge task: %d catalog texts for %d codes (%d with no training note)",
            len(extra),
            int(targets.any(axis=0).sum()),
            unseen,
        )
        spans_out = None if spans is None else [*spans, *([()] * len(extra))]
        return [*texts, *extra], np.vstack([y, targets]), spans_out

    def _note_states(self, corpus: EncodedSubwords) -> list[list[torch.Tensor]]:
        """Per note, per row (trun: one; hier: its segments), the frozen layers' output ``[row tokens, hidden]``."""
        key = id(corpus)
        if key in self._frozen_cache:
            return self._frozen_cache[key][1]
        network = self._cache_network
        assert network is not None
        states: list[list[torch.Tensor]] = [[] for _ in range(len(corpus))]
        order = np.argsort(corpus.lengths, kind="stable").tolist()
        batches: list[list[int]] = [[]]  # similar lengths together, about _CACHE_TOKENS tokens a batch
        for i in order:
            if batches[-1] and (len(batches[-1]) + 1) * (int(corpus.lengths[i]) + 2) > _CACHE_TOKENS:
                batches.append([])
            batches[-1].append(i)
        was_training = network.training
        network.eval()
        # normal tensors even when called from a scoring pass under inference_mode: training reuses them
        with torch.inference_mode(False), torch.no_grad():
            for indices in batches:
                rows = self._collate(corpus, indices)
                out = network.frozen_states(rows)
                lengths = rows["attention_mask"].sum(dim=1).tolist()
                docs = rows.get("segment_doc", torch.arange(len(indices))).tolist()
                for r, (doc, n) in enumerate(zip(docs, lengths, strict=True)):
                    states[indices[doc]].append(out[r, :n].clone())
        network.train(was_training)
        self._frozen_cache[key] = (corpus, states)  # the corpus is kept so its id is not reused
        logger.info("frozen layers' output cached for %d notes", len(corpus))
        return states

    def _with_frozen_states(
        self, rows: dict[str, torch.Tensor], corpus: EncodedSubwords, indices: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        cache = self._note_states(corpus)
        width = rows["input_ids"].shape[1]
        docs = rows.get("segment_doc", torch.arange(len(indices))).tolist()
        slots = rows.get("segment_slot", torch.zeros(len(indices), dtype=torch.long)).tolist()
        first = cache[indices[docs[0]]][slots[0]]
        grid = first.new_zeros(len(docs), width, first.shape[-1])
        for r, (doc, slot) in enumerate(zip(docs, slots, strict=True)):
            piece = cache[indices[doc]][slot]
            grid[r, : len(piece)] = piece
        return {**rows, "frozen_states": grid}

    # ---------------------------------------------------------- batches
    def encode(self, texts: Sequence[str]) -> EncodedSubwords:
        cfg = self.config
        content = cfg.max_tokens - 2 if cfg.architecture == "trun" else cfg.max_tokens
        return self.subwords_.encode(texts, max_tokens=content)

    def batch(self, corpus: EncodedSubwords, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = self._collate(corpus, indices)
        if getattr(self, "_cache_network", None) is not None:
            return self._with_frozen_states(rows, corpus, list(indices))
        return rows

    def _collate(self, corpus: EncodedSubwords, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.architecture == "trun":
            return collate_truncated(self.subwords_, corpus.ids, indices)
        return collate_segments(
            self.subwords_, corpus.ids, indices, segment_length=cfg.segment_length, stride=cfg.segment_stride
        )

    def training_batch(
        self, corpus: EncodedSubwords, indices: Sequence[int], y: np.ndarray, *, seed: int, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        batch = super().training_batch(corpus, indices, y, seed=seed, epoch=epoch, step=step)
        for name, target in self._levels.items():
            batch[f"level.{name}"] = torch.from_numpy(target[list(indices)].astype(np.float32))
        if self._span_tags is not None:
            index = batch["content_index"]
            span_tags = torch.full(index.shape, -1.0)
            for row, i in enumerate(indices):
                if self._span_tags[i] is not None:
                    real = index[row] >= 0
                    span_tags[row, real] = torch.from_numpy(self._span_tags[i])[index[row, real]]
            batch["span_tags"] = span_tags
        return batch

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = self.forward(network, batch)
        loss = coder_loss(output.logits, batch["labels"], single_label=self.single_label)
        aux = self.config.auxiliary
        if aux is None or not output.auxiliary:
            return loss
        levels = [name for name in output.auxiliary if name != "spans"]
        for name in levels:
            level_loss = coder_loss(output.auxiliary[name], batch[f"level.{name}"], single_label=False)
            loss = loss + aux.level_weight / len(levels) * level_loss
        if "spans" in output.auxiliary:
            tags = batch["span_tags"]
            known = tags >= 0
            if bool(known.any()):
                span_logits = output.auxiliary["spans"].float()[known]
                span_loss = torch.nn.functional.binary_cross_entropy_with_logits(span_logits, tags[known])
                loss = loss + aux.span_weight * span_loss
        return loss

    def training_report(self) -> dict[str, Any]:
        report = super().training_report()
        if self.config.auxiliary is not None:
            report["auxiliary"] = getattr(self, "auxiliary_", None)
        return report

    # ------------------------------------------------------------ evidence
    def token_attention(
        self, batch: dict[str, torch.Tensor], attention: torch.Tensor, corpus: EncodedSubwords
    ) -> torch.Tensor:
        # Overlapping segments hold a token twice: its attention is the sum over its positions.
        index = batch["content_index"][0]
        n_content = len(corpus.ids[0])
        per_token = torch.zeros(attention.shape[0], max(n_content, 1))
        real = index >= 0
        per_token.index_add_(1, index[real], attention[:, real])
        return per_token[:, :n_content]

    def token_offsets(self, text: str, corpus: EncodedSubwords) -> list[tuple[int, int]]:
        return [(int(s), int(e)) for s, e in corpus.offsets[0]]

    # --------------------------------------------------------- persistence
    def save_state(self, directory: Path) -> None:
        save_encoder_files(self.members_[0].encoder, self.tokenizer_, directory / "encoder")

    def load_state(self, directory: Path) -> None:
        self.encoder_dir_ = directory / "encoder"
        self._set_tokenizer(
            *load_config_and_tokenizer(str(self.encoder_dir_), self.config.encoder, attention_dropout=None)
        )
        self.auxiliary_ = {"levels": {}, "span_tagging": False}
