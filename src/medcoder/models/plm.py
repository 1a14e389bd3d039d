"""The transformer coder (``transformer.v1``) as a ``CodingModel``.

This adapter owns the tokenizer, truncation or segmentation of notes, the
shared training loop (with layer-wise LR decay and a larger LR for the new
heads), prediction, attention evidence and the bundle files. The network is
:class:`medcoder.models.transformer.TransformerCoderModule`.

Bundle files: ``model.safetensors`` (encoder + head weights) and ``encoder/``
(the encoder's Hugging Face ``config.json`` and tokenizer files), so a bundle
loads offline whatever hub id it was trained from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medcoder.config import TransformerCoderConfig
from medcoder.data.encoding import LengthBucketPlan
from medcoder.data.subwords import EncodedSubwords, SubwordEncoder, collate_segments, collate_truncated
from medcoder.errors import BundleError, MedcoderError
from medcoder.models.base import CodingModel, DevSet, Progress, TaskType
from medcoder.models.heads import masked_mean_pool, top_evidence
from medcoder.models.torch_common import coder_loss, dev_metrics, member_record, set_prior_bias, stopping_config
from medcoder.models.transformer import (
    ProjectedLabelAttention,
    TransformerCoderModule,
    layerwise_param_groups,
    load_encoder,
    row_limit,
    save_encoder_files,
)
from medcoder.registry import MODELS
from medcoder.training.loop import train_loop
from medcoder.training.precision import autocast_factory

logger = logging.getLogger(__name__)

_PREDICT_BATCH = 16


class TransformerCoder(CodingModel):
    """A Hugging Face encoder + pooled or label-attention head, truncated or hierarchical."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "encoder/config.json")
    config: TransformerCoderConfig

    # ------------------------------------------------------------ building
    def _build(
        self,
        encoder_location: str,
        *,
        pretrained: bool,
        aux_labels: dict[str, int] | None = None,
        span_tagging: bool = False,
    ) -> None:
        cfg = self.config
        encoder, tokenizer = load_encoder(
            encoder_location, attention_dropout=cfg.attention_dropout, pretrained=pretrained
        )
        try:
            self.subwords_ = SubwordEncoder(tokenizer)
        except ValueError as exc:
            raise MedcoderError(f"encoder {cfg.encoder!r}: {exc}") from None
        self.tokenizer_ = tokenizer
        limit = row_limit(encoder.config)
        width = cfg.max_tokens if cfg.architecture == "trun" else cfg.segment_length
        if limit is not None and width > limit:
            raise MedcoderError(
                f"encoder {cfg.encoder!r} takes at most {limit} tokens per row; "
                f"{'max_tokens' if cfg.architecture == 'trun' else 'segment_length'} is {width}"
            )
        self.module_ = TransformerCoderModule(
            encoder,
            self.n_labels,
            architecture=cfg.architecture,
            head=cfg.head,
            pooling=cfg.pooling,
            dropout=cfg.dropout,
            projection=cfg.projection,
            segment_layers=cfg.segment_layers,
            aux_labels=aux_labels,
            span_tagging=span_tagging,
        )

    def _level_targets(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Per auxiliary ICD level, bool ``[n_docs, level codes]``: the ancestors of each note's codes."""
        aux = self.config.auxiliary
        if aux is None or not aux.levels:
            return {}
        if self.single_label or self.label_codes is None or self.label_system not in ("icd10cm", "icd9cm"):
            raise MedcoderError(
                "auxiliary.levels needs a multi-label task whose labels are ICD codes (labels.system icd10cm or icd9cm)"
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

    def _describe_labels(self) -> torch.Tensor:
        """The encoder's mean token state of each label's description (its code when it has none): ``[labels, hidden]``."""
        descriptions = self.label_descriptions or [None] * self.n_labels
        codes = self.label_codes or [""] * self.n_labels
        texts = [d or c or "" for d, c in zip(descriptions, codes, strict=True)]
        corpus = self.subwords_.encode(texts, max_tokens=32)
        encoder = self.module_.encoder
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

    def _init_from_descriptions(self) -> None:
        """Label queries/weights along the description embeddings, at the norm the random init had.

        Label attention: the query and output weight of label ``l`` become
        ``tanh(W d_l)`` (``d_l`` its description's embedding, ``W`` the head's
        projection), so the positions that resemble the description get the
        attention from the first step. Pooled head: the output weights become ``d_l``.
        """
        if not self.label_descriptions and not self.label_codes:
            raise MedcoderError("label_init: descriptions needs the label space's descriptions (an ICD label system)")
        head = self.module_.head
        vectors = self._describe_labels()
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

    def _encode(self, texts: Sequence[str]) -> EncodedSubwords:
        cfg = self.config
        content = cfg.max_tokens - 2 if cfg.architecture == "trun" else cfg.max_tokens
        return self.subwords_.encode(texts, max_tokens=content)

    def _collate(self, corpus: EncodedSubwords, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.architecture == "trun":
            return collate_truncated(self.subwords_, corpus.ids, indices)
        return collate_segments(
            self.subwords_, corpus.ids, indices, segment_length=cfg.segment_length, stride=cfg.segment_stride
        )

    # ------------------------------------------------------------ training
    def _loss(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output = module(batch)
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
    ) -> TransformerCoder:
        if pairs is not None or self.task == "pair":
            raise MedcoderError("transformer.v1 codes single texts; sentence pairs need tfidf_lr.v1")
        cfg = self.config
        train_config = stopping_config(cfg.train, single_label=self.single_label, task=self.task)
        self.stopping_metric_ = train_config.early_stopping_metric
        y = np.asarray(y, dtype=bool)
        levels = self._level_targets(y)
        span_tagging = cfg.auxiliary is not None and cfg.auxiliary.span_tagging
        if span_tagging and not (spans and any(spans)):
            logger.warning("auxiliary.span_tagging: no training note carries evidence spans; the task is skipped")
            span_tagging = False
        torch.manual_seed(self.seed)
        aux_sizes = {name: target.shape[1] for name, target in levels.items()}
        self._build(cfg.encoder, pretrained=True, aux_labels=aux_sizes, span_tagging=span_tagging)
        module = self.module_
        if cfg.gradient_checkpointing:
            module.encoder.gradient_checkpointing_enable()
        if cfg.label_init == "descriptions":
            self._init_from_descriptions()
        if not self.single_label:
            set_prior_bias(module.head.output_bias, y)
            for name, target in levels.items():
                set_prior_bias(module.aux_heads[name].output_bias, target)
        corpus = self._encode(texts)
        logger.info("%d of %d notes truncated to %d tokens", corpus.n_truncated, len(corpus), cfg.max_tokens)
        labels = torch.from_numpy(y.astype(np.float32))
        level_labels = {name: torch.from_numpy(target.astype(np.float32)) for name, target in levels.items()}
        tags = self._token_tags(corpus, spans) if span_tagging and spans is not None else None

        def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
            batch = {**self._collate(corpus, indices), "labels": labels[indices]}
            for name, target in level_labels.items():
                batch[f"level.{name}"] = target[indices]
            if tags is not None:
                index = batch["content_index"]
                span_tags = torch.full(index.shape, -1.0)
                for row, i in enumerate(indices):
                    if tags[i] is not None:
                        real = index[row] >= 0
                        span_tags[row, real] = torch.from_numpy(tags[i])[index[row, real]]
                batch["span_tags"] = span_tags
            return batch

        evaluate = None
        if dev is not None:
            dev_corpus = self._encode(dev.texts)
            dev_y = np.asarray(dev.y, dtype=bool)

            def evaluate(trained: torch.nn.Module) -> dict[str, float]:
                return dev_metrics(self._scores(trained, dev_corpus), dev_y, single_label=self.single_label)

        groups = layerwise_param_groups(
            module,
            lr=cfg.train.lr,
            decay=cfg.layer_lr_decay,
            head_lr=cfg.head_lr,
            weight_decay=cfg.train.weight_decay,
        )
        plan = LengthBucketPlan(
            corpus.lengths, batch_size=cfg.train.batch_size, seed=self.seed, bucketing=cfg.train.length_bucketing
        )
        result = train_loop(
            module,
            plan,
            make_batch,
            self._loss,
            train_config,
            evaluate=evaluate,
            checkpoint_dir=None if work_dir is None else work_dir / "member0",
            seed=self.seed,
            progress=progress,
            param_groups=groups,
        )
        if cfg.gradient_checkpointing:
            module.encoder.gradient_checkpointing_disable()
        module.drop_auxiliary()
        module.eval()
        self.auxiliary_ = {"levels": aux_sizes, "span_tagging": span_tagging}
        self.history_ = [member_record(0, self.seed, result)]
        return self

    def training_report(self) -> dict[str, Any]:
        report = {"metric": getattr(self, "stopping_metric_", None), "members": getattr(self, "history_", [])}
        if self.config.auxiliary is not None:
            report["auxiliary"] = getattr(self, "auxiliary_", None)
        return report

    # ---------------------------------------------------------- prediction
    def _scores(self, module: torch.nn.Module, corpus: EncodedSubwords) -> np.ndarray:
        """Probabilities float32 ``[n_docs, n_labels]``, batches of similar length."""
        order = np.argsort(corpus.lengths, kind="stable")
        out = np.zeros((len(corpus), self.n_labels), dtype=np.float32)
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        with torch.inference_mode(), autocast_factory(self.config.train.precision, device)():
            for start in range(0, len(order), _PREDICT_BATCH):
                indices = order[start : start + _PREDICT_BATCH].tolist()
                logits = module(self._collate(corpus, indices)).logits.float()
                probs = torch.softmax(logits, dim=1) if self.single_label else torch.sigmoid(logits)
                out[indices] = probs.numpy()
        module.train(was_training)
        return out

    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        if pairs is not None:
            raise MedcoderError("transformer.v1 codes single texts, not pairs")
        return self._scores(self.module_, self._encode(texts))

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, window: int = 5, top: int = 3
    ) -> list[dict[int, list[tuple[int, int, float]]]]:
        """Per note, the strongest character spans behind each requested label (label-attention head only)."""
        if self.config.head != "label_attention":
            raise MedcoderError("transformer.v1 with a pooled head has no attention to explain its codes with")
        results = []
        with torch.inference_mode():
            for text, labels in zip(texts, label_indices, strict=True):
                corpus = self._encode([text])
                batch = self._collate(corpus, [0])
                attention = self.module_(batch).attention[0].float()  # [labels, positions]
                index = batch["content_index"][0]
                n_content = len(corpus.ids[0])
                # Overlapping segments hold a token twice: its attention is the sum over its positions.
                per_token = torch.zeros(attention.shape[0], max(n_content, 1))
                real = index >= 0
                per_token.index_add_(1, index[real], attention[:, real])
                offsets = [(int(s), int(e)) for s, e in corpus.offsets[0]]
                results.append(top_evidence(per_token[:, :n_content], offsets, list(labels), window=window, top=top))
        return results

    # --------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        tensors = {name: t.detach().contiguous() for name, t in self.module_.state_dict().items()}
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "medcoder.transformer.v1"})
        save_encoder_files(self.module_.encoder, self.tokenizer_, directory / "encoder")

    @classmethod
    def load(
        cls, directory: Path, config: TransformerCoderConfig, *, n_labels: int, task: TaskType
    ) -> TransformerCoder:
        model = cls(config, n_labels=n_labels, task=task)
        model._build(str(directory / "encoder"), pretrained=False)
        try:
            tensors = load_file(str(directory / "model.safetensors"))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BundleError(f"{directory / 'model.safetensors'}: unreadable weights ({exc})") from None
        try:
            model.module_.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise BundleError(f"{directory / 'model.safetensors'}: weights do not fit the config ({first})") from None
        model.module_.eval()
        return model


MODELS.register("transformer.v1")(TransformerCoder)
