"""Transfer-learning stage configs: what ``medcoder adapt-domain`` reads."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medcoder.config.base import Strict
from medcoder.config.train import TrainConfig


def _mlm_train() -> TrainConfig:
    # Continued pretraining (Gururangan et al. 2020 style): small LR, warmup, early stop on held-out MLM loss.
    return TrainConfig(
        epochs=1,
        batch_size=16,
        lr=5e-5,
        warmup_ratio=0.06,
        weight_decay=0.01,
        early_stopping_metric="loss",
        early_stopping_patience=2,
    )


class AdaptDomainConfig(Strict):
    """Stage 1 (``medcoder adapt-domain``): continue masked-LM training of an encoder on unlabeled in-domain text."""

    command: ClassVar[str] = "medcoder adapt-domain"

    kind: Literal["adapt_domain"] = "adapt_domain"
    encoder: str = "minilm"  # hub id, local folder (e.g. another stage's output) or the packaged MiniLM
    corpus: list[str] = Field(min_length=1)  # JSON-lines files, one note per line
    text_field: str = "text"
    max_tokens: int = Field(256, ge=8)  # block length incl. [CLS]/[SEP]; notes are cut into blocks
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    max_blocks: int | None = Field(None, ge=2)  # cap on training blocks (quick runs); None: all
    dev_fraction: float = Field(0.05, gt=0.0, lt=0.5)  # held-out blocks for the early-stopping MLM loss
    attention_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    train: TrainConfig = Field(default_factory=_mlm_train)
