"""The config ``medcoder retrieval`` reads: bi-encoder, catalog index, mentions, fusion."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medcoder.config.base import PathText, Strict
from medcoder.config.data import DataConfig
from medcoder.config.train import TrainConfig


class MentionsConfig(Strict):
    max_tokens: int = Field(10, ge=1)  # longer phrases are cut into pieces of this many tokens


class PairsConfig(Strict):
    # a gold code becomes a training pair with its nearest mention when their cosine reaches this
    min_similarity: float = Field(0.3, ge=-1.0, le=1.0)


class BiEncoderTrainConfig(Strict):
    """Fine-tuning the bi-encoder (MultipleNegativesRankingLoss) through the shared training loop."""

    epochs: int = Field(1, ge=0)  # 0: use the encoder as it is
    batch_size: int = Field(64, ge=2)  # in-batch negatives: batch_size - 1 per pair
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)  # then linear decay
    weight_decay: float = Field(0.01, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: a checkpoint at the end of every epoch only
    # as every medcoder model: bf16 only where the hardware computes it natively (fp32 on AVX2 CPUs)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # a third column per pair: the wrong catalog code the untrained encoder ranks highest for the mention
    # (costs one extra catalog index, of the untrained encoder, cached like the other)
    hard_negatives: bool = True
    seed: int = 0

    def loop_config(self) -> TrainConfig:
        """The training loop's settings: every epoch runs; the best dev triplet accuracy (or the start) is kept."""
        return TrainConfig(
            epochs=max(self.epochs, 1),
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_ratio=self.warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            schedule="linear",
            early_stopping_metric="accuracy",
            early_stopping_patience=max(self.epochs, 1),
            checkpoint_every_steps=self.checkpoint_every_steps,
            precision=self.precision,
        )


class IndexConfig(Strict):
    system: Literal["icd10cm", "icd10pcs"] = "icd10cm"
    leaves_only: bool = False  # False: leaf codes and the categories above them (coded data uses both)
    prefixes: list[str] | None = None  # only codes starting with one of these (e.g. a chapter); None: all
    cache_dir: PathText | None = None  # None: $MEDCODER_CACHE/index or ~/.cache/medcoder/index (shared by runs)


class SearchConfig(Strict):
    k: int = Field(10, ge=1)  # codes kept per mention


class FusionConfig(Strict):
    # grids searched on dev: retrieval weight for the classifier's codes, for codes it never saw, cosine floor
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3, 1.0], min_length=1)
    novel_weights: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3, 1.0], min_length=1)
    floors: list[float] = Field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6], min_length=1)
    novel_top: int = Field(3, ge=0)  # codes the classifier never saw, suggested apart per note (0: none)
    classifier_top: int | None = Field(None, ge=1)  # classifier codes kept per note; None: all of them


class RetrievalConfig(Strict):
    """What ``medcoder retrieval`` reads: it writes a retrieval system (a bundle of kind ``retrieval``)."""

    command: ClassVar[str] = "medcoder retrieval"

    kind: Literal["retrieval"] = "retrieval"
    data: DataConfig = Field(default_factory=DataConfig)
    encoder: str = "minilm"  # sentence-transformers folder or hub id; "minilm": the packaged MiniLM
    max_seq_length: int = Field(64, ge=8)
    classifier: PathText | None = None  # a multi-label model bundle to fuse with (copied in); None: retrieval alone
    mentions: MentionsConfig = Field(default_factory=MentionsConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: BiEncoderTrainConfig = Field(default_factory=BiEncoderTrainConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
