"""The config ``medcoder retrieval`` reads: bi-encoder, catalog index, mentions, fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medcoder.config.base import Strict, read_config_file, validate
from medcoder.config.data import DataConfig


class MentionsConfig(Strict):
    max_tokens: int = Field(10, ge=1)  # longer phrases are cut into pieces of this many tokens


class PairsConfig(Strict):
    # a gold code becomes a training pair with its nearest mention when their cosine reaches this
    min_similarity: float = Field(0.3, ge=-1.0, le=1.0)


class BiEncoderTrainConfig(Strict):
    epochs: int = Field(1, ge=0)  # 0: use the encoder as it is
    batch_size: int = Field(64, ge=2)  # in-batch negatives: batch_size - 1 per pair
    lr: float = Field(2e-5, gt=0)
    # a third column per pair: the wrong catalog code the untrained encoder ranks highest for the mention
    # (costs one extra catalog index, of the untrained encoder, cached like the other)
    hard_negatives: bool = True
    seed: int = 0


class IndexConfig(Strict):
    system: Literal["icd10cm"] = "icd10cm"
    leaves_only: bool = False  # False: leaf codes and the categories above them (coded data uses both)
    prefixes: list[str] | None = None  # only codes starting with one of these (e.g. a chapter); None: all
    cache_dir: str | None = None  # None: <output>/index


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
    stage: Literal["retrieval"] = "retrieval"
    data: DataConfig = Field(default_factory=DataConfig)
    encoder: str = "minilm"  # sentence-transformers folder or hub id; "minilm": the packaged MiniLM
    max_seq_length: int = Field(64, ge=8)
    classifier: str | None = None  # a trained medcoder bundle to fuse with; None: retrieval alone
    mentions: MentionsConfig = Field(default_factory=MentionsConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: BiEncoderTrainConfig = Field(default_factory=BiEncoderTrainConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)


def load_retrieval_config(path: str | Path) -> RetrievalConfig:
    """Read and validate a retrieval config file."""
    return validate(RetrievalConfig, read_config_file(path), source=str(path))
