"""Transfer-learning stage configs: what ``medcoder adapt-domain`` reads."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from medcoder.config.base import Strict
from medcoder.config.train import TrainConfig


def _mlm_train() -> TrainConfig:
    # Continued pretraining (Gururangan et al. 2020 style): small LR, warmup, early stop on held-out MLM loss.
    return TrainConfig(
        epochs=1,
        batch_size=16,
        lr=2e-5,
        warmup_ratio=0.06,
        weight_decay=0.01,
        early_stopping_metric="loss",
        early_stopping_patience=2,
    )


class AdaptDomainConfig(Strict):
    """Stage 1 (``medcoder adapt-domain``): train an encoder further on unlabeled in-domain text.

    ``objective``: ``mlm`` continues masked-LM training (an encoder pretrained that way: BERT, RoBERTa...);
    ``simcse`` trains a sentence encoder (MiniLM as shipped, any sentence-transformers model) the way it was
    made: unsupervised SimCSE (Gao et al. 2021), each block against itself under another dropout mask, the
    other blocks of the batch the negatives. Masked-LM pulls a contrastive encoder away from what it learned.
    """

    command: ClassVar[str] = "medcoder adapt-domain"

    kind: Literal["adapt_domain"] = "adapt_domain"
    encoder: str = "minilm"  # hub id, local folder (e.g. another stage's output) or the packaged MiniLM
    objective: Literal["mlm", "simcse"] = "mlm"
    temperature: float = Field(0.05, gt=0.0)  # simcse: of the cosine similarities (the paper's 0.05)
    # simcse: batches also hold the catalog's (inclusion term, code description) pairs as positives
    catalog: Literal["none", "icd10cm"] = "none"
    corpus: list[str] = Field(min_length=1)  # JSON-lines files, one note per line
    text_field: str = "text"
    max_tokens: int = Field(256, ge=8)  # block length incl. [CLS]/[SEP]; notes are cut into blocks
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    # mask whole words (all the sub-word pieces of a chosen word) instead of single pieces
    whole_word_masking: bool = True
    # A checkpoint without an MLM head gets a new, random one. head_first_steps > 0 trains that head alone
    # (encoder frozen, lr head_lr) for so many steps before the encoder joins, so its first, random
    # gradients never reach the encoder. tie_new_head: the new head's output weights are the word
    # embeddings (BERT's tying: the MLM loss then moves every input embedding); false: an untied copy.
    head_first_steps: int = Field(200, ge=0)
    head_lr: float = Field(1e-3, gt=0.0)
    tie_new_head: bool = False
    freeze_embeddings: bool = True  # the input embeddings stay as pretrained (the encoder layers adapt)
    max_blocks: int | None = Field(None, ge=2)  # cap on training blocks (quick runs); None: all
    dev_fraction: float = Field(0.05, gt=0.0, lt=0.5)  # held-out blocks for the early-stopping MLM loss
    # masked-LM: 0 saves time; simcse: dropout is the augmentation (None keeps the checkpoint's, as the paper does)
    attention_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    train: TrainConfig = Field(default_factory=_mlm_train)

    @model_validator(mode="after")
    def _catalog_is_contrastive(self) -> AdaptDomainConfig:
        if self.catalog != "none" and self.objective != "simcse":
            raise ValueError("catalog pairs are positives of a contrastive objective: set objective: simcse")
        return self
