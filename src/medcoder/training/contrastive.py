"""Domain adaptation for sentence encoders: unsupervised SimCSE (Gao et al. 2021) on unlabeled in-domain notes.

A sentence encoder (MiniLM as shipped, any sentence-transformers model) was trained contrastively,
not by masked-LM, and has no MLM head: masked-LM training pulls it away from what it learned (on
CodiEsp it cost the frozen label-attention coder 0.037 test MAP). SimCSE keeps its objective: each
block of a note is encoded twice, under two dropout masks; the two views of a block must be closer
to each other than to every other block of the batch (cross-entropy over the cosine similarities of
the mean-pooled embeddings, divided by ``temperature``). The held-out record is the same loss on the
held-out blocks, with dropout drawn from a fixed seed so every epoch is scored on the same views.
The folder it writes is the same as masked-LM's (:func:`medcoder.training.encoder_stage.finish_stage`):
``encoder: <folder>`` in a ``transformer.v1`` config, a retrieval or reranker config starts from it.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcoder.config.adapt_domain import AdaptDomainConfig
from medcoder.data.encoding import LengthBucketPlan
from medcoder.data.subwords import SubwordEncoder, collate_truncated
from medcoder.engine.loop import train_loop
from medcoder.errors import MedcoderError
from medcoder.models.hf_encoders import load_config_and_tokenizer, quiet_transformers, resolve_encoder
from medcoder.progress import Reporter
from medcoder.training.encoder_stage import checkpoints_of, corpus_blocks, finish_stage, read_corpus

logger = logging.getLogger(__name__)

_DEV_SEED = 2**31 - 1  # the dropout stream of the held-out views: one no training step uses


def mean_pooled(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unit-length mean of the token states over the attention mask: ``[batch, hidden]`` (sentence-transformers'
    pooling, so the adapted encoder embeds the way retrieval reads it)."""
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]  # [batch, time, hidden]
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def simcse_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of each row; row i's positive is its own other view.

    ``batch``: input_ids / attention_mask ``[batch, time]``; the model must be in train mode (dropout on).
    """
    first, second = mean_pooled(model, batch), mean_pooled(model, batch)
    similarities = first @ second.T / temperature  # [batch, batch]
    return torch.nn.functional.cross_entropy(similarities, torch.arange(len(first)))


def _load_encoder(name: str, attention_dropout: float | None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel

    location = resolve_encoder(name)
    config, tokenizer = load_config_and_tokenizer(location, name, attention_dropout=attention_dropout)
    with quiet_transformers():
        model = AutoModel.from_pretrained(location, config=config)
    return model, tokenizer


def adapt_contrastive(config: AdaptDomainConfig, output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    """SimCSE training of ``config.encoder`` on ``config.corpus``; writes an encoder folder to ``output_dir``.

    Resumable: the loop checkpoints into ``OUTPUT.checkpoints/`` and the same command goes on from there.
    """
    texts = read_corpus(config, reporter)  # before the encoder: a bad file fails fast
    model, tokenizer = _load_encoder(config.encoder, config.attention_dropout)
    subwords = SubwordEncoder(tokenizer)
    train_blocks, dev_blocks = corpus_blocks(texts, subwords, config, reporter)
    if len(train_blocks) < 2 or config.train.batch_size < 2:
        raise MedcoderError(
            "contrastive training needs batches of at least 2 blocks (the other blocks of a batch are the negatives)"
        )
    loss = functools.partial(simcse_loss, temperature=config.temperature)

    def rows(blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        batch = collate_truncated(subwords, blocks, range(len(blocks)))
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
        return rows([train_blocks[i] for i in indices])

    size = config.train.batch_size
    # a held-out batch of one block has no negative: nothing to score
    dev_batches = [rows(dev_blocks[i : i + size]) for i in range(0, len(dev_blocks), size) if len(dev_blocks) - i > 1]

    def evaluate(trained: torch.nn.Module) -> dict[str, float]:
        """The SimCSE loss of the held-out blocks, dropout from a fixed seed (the training RNG is left as it was)."""
        mode = trained.training
        trained.train()
        total, count = 0.0, 0
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(_DEV_SEED)
            for batch in dev_batches:
                n = len(batch["input_ids"])
                total += float(loss(trained, batch)) * n
                count += n
        trained.train(mode)
        return {"loss": total / max(count, 1)}

    started = time.perf_counter()
    before = evaluate(model)["loss"]
    start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    work_dir = checkpoints_of(output_dir)
    plan = LengthBucketPlan([len(b) for b in train_blocks], batch_size=size, seed=config.seed, bucketing=True)
    if config.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    model.train()
    with reporter.task("contrastive training (SimCSE)", total=None) as update:
        result = train_loop(
            model,
            plan,
            make_batch,
            loss,
            config.train.model_copy(update={"early_stopping_metric": "loss"}),
            evaluate=evaluate,
            checkpoint_dir=work_dir / "all",
            seed=config.seed,
            progress=update,
        )
    model.eval()
    after = float(result.best_score) if result.best_score is not None else evaluate(model)["loss"]
    figures = {
        "temperature": config.temperature,
        "dev_contrastive_loss_before": before,
        "dev_contrastive_loss_after": after,
    }
    return finish_stage(
        output_dir,
        model,
        tokenizer,
        config,
        objective="simcse",
        notes=len(texts),
        blocks=(len(train_blocks), len(dev_blocks)),
        figures=figures,
        start_weights=start_weights,
        seconds=time.perf_counter() - started,
        result=result,
        # a sentence encoder already tells most blocks apart: the loss starts small, so significant digits
        summary=f"held-out contrastive (SimCSE) loss {before:.3g} -> {after:.3g}",
    )
