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
from medcoder.models.heads import top_evidence
from medcoder.models.torch_common import coder_loss, dev_metrics, set_prior_bias, stopping_config
from medcoder.models.transformer import (
    TransformerCoderModule,
    layerwise_param_groups,
    load_encoder,
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
    def _build(self, encoder_location: str, *, pretrained: bool) -> None:
        cfg = self.config
        encoder, tokenizer = load_encoder(
            encoder_location, attention_dropout=cfg.attention_dropout, pretrained=pretrained
        )
        try:
            self.subwords_ = SubwordEncoder(tokenizer)
        except ValueError as exc:
            raise MedcoderError(f"encoder {cfg.encoder!r}: {exc}") from None
        self.tokenizer_, self.encoder_config_ = tokenizer, encoder.config
        limit = getattr(encoder.config, "max_position_embeddings", None)
        width = cfg.max_tokens if cfg.architecture == "trun" else cfg.segment_length
        if limit is not None and width > limit - 2 and getattr(encoder.config, "model_type", "") != "longformer":
            # RoBERTa-style position ids start after the padding index, so keep a margin of 2.
            raise MedcoderError(
                f"encoder {cfg.encoder!r} takes at most {limit - 2} tokens per row; "
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
        )

    def _encode(self, texts: Sequence[str]) -> EncodedSubwords:
        cfg = self.config
        content = cfg.max_tokens - 2 if cfg.architecture == "trun" else cfg.max_tokens
        return self.subwords_.encode(texts, max_tokens=content)

    def _collate(self, corpus: EncodedSubwords, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.architecture == "trun":
            return collate_truncated(self.subwords_, corpus, indices)
        return collate_segments(
            self.subwords_, corpus, indices, segment_length=cfg.segment_length, stride=cfg.segment_stride
        )

    # ------------------------------------------------------------ training
    def _loss(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return coder_loss(module(batch).logits, batch["labels"], single_label=self.single_label)

    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        pairs: Sequence[str] | None = None,
        dev: DevSet | None = None,
        work_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> TransformerCoder:
        if pairs is not None or self.task == "pair":
            raise MedcoderError("transformer.v1 codes single texts; sentence pairs need tfidf_lr.v1")
        cfg = self.config
        train_config = stopping_config(cfg.train, single_label=self.single_label, task=self.task)
        self.stopping_metric_ = train_config.early_stopping_metric
        y = np.asarray(y, dtype=bool)
        torch.manual_seed(self.seed)
        self._build(cfg.encoder, pretrained=True)
        module = self.module_
        if cfg.gradient_checkpointing:
            module.encoder.gradient_checkpointing_enable()
        if not self.single_label:
            set_prior_bias(module.head.output_bias, y)
        corpus = self._encode(texts)
        logger.info("%d of %d notes truncated to %d tokens", corpus.n_truncated, len(corpus), cfg.max_tokens)
        labels = torch.from_numpy(y.astype(np.float32))

        def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
            return {**self._collate(corpus, indices), "labels": labels[indices]}

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
        module.eval()
        self.history_ = [
            {
                "member": 0,
                "seed": self.seed,
                "best_epoch": result.best_epoch,
                "best_dev": result.best_score,
                "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early,
                "resumed_from_step": result.resumed_from,
                "history": result.history,
            }
        ]
        return self

    def training_report(self) -> dict[str, Any]:
        return {"metric": getattr(self, "stopping_metric_", None), "members": getattr(self, "history_", [])}

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
