"""Transfer-learning stages that produce encoders for later stages.

Stage 1, :func:`adapt_domain`: continue masked-LM training of an encoder on
unlabeled in-domain text (``objective: mlm``), or train a sentence encoder
contrastively on it (``objective: simcse``: :mod:`medcoder.training.contrastive`).
A checkpoint without an MLM head (MiniLM as shipped, most sentence encoders)
gets a new one for masked-LM, untied from the word embeddings by default. The
output folder is a plain Hugging Face model folder (``config.json``,
``model.safetensors``, tokenizer files) plus ``stage.json`` saying how it was
made, so ``encoder: <folder>`` in a ``transformer.v1`` config, or another
stage, starts from it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcoder.config.adapt_domain import AdaptDomainConfig
from medcoder.config.train import TrainConfig
from medcoder.data.encoding import LengthBucketPlan, dropout_seed
from medcoder.data.subwords import SubwordEncoder, collate_truncated
from medcoder.engine.loop import Evaluate, LoopResult, MakeBatch, train_loop
from medcoder.errors import MedcoderError
from medcoder.models.hf_encoders import load_config_and_tokenizer, quiet_transformers, resolve_encoder
from medcoder.progress import LogReporter, Reporter
from medcoder.training.contrastive import adapt_contrastive
from medcoder.training.encoder_stage import check_stage_target, checkpoints_of, corpus_blocks, finish_stage, read_corpus

logger = logging.getLogger(__name__)

_DEV_EPOCH = 2**31 - 1  # the masking stream of the held-out blocks: an "epoch" training never reaches


def continuation_pieces(tokenizer: Any) -> np.ndarray:
    """bool ``[vocab]``: whether each token id continues the word before it (whole-word masking).

    WordPiece marks continuations (``##ing``); byte-level BPE (``Ġword``) and
    SentencePiece (``▁word``) mark word starts instead.
    """
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    pieces = [""] * size
    for token, index in vocab.items():
        pieces[index] = token
    if any(p.startswith("##") for p in pieces):
        return np.array([p.startswith("##") for p in pieces], dtype=bool)
    for marker in ("\u0120", "\u2581"):
        if sum(p.startswith(marker) for p in pieces) > size // 10:
            return np.array([bool(p) and not p.startswith(marker) for p in pieces], dtype=bool)
    return np.zeros(size, dtype=bool)  # no word marks: every piece is a word


def mask_tokens(
    blocks: list[np.ndarray],
    encoder: SubwordEncoder,
    *,
    probability: float,
    vocab_size: int,
    special_ids: set[int],
    seed: int,
    continuation: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """BERT masking of ``[CLS] block [SEP]`` rows: of the chosen content tokens 80% [MASK], 10% random, 10% kept.

    Returns input_ids/attention_mask/labels ``[batch, time]``; labels are -100 except at
    chosen positions. The choice depends only on ``seed``; at least one token is chosen.
    With ``continuation`` (:func:`continuation_pieces`) whole words are chosen:
    each word with ``probability``, and then every piece of it.
    """
    rng = np.random.default_rng(seed)
    rows = collate_truncated(encoder, blocks, range(len(blocks)))
    input_ids, attention = rows["input_ids"].numpy(), rows["attention_mask"]
    content = rows["content_index"].numpy() >= 0
    content &= ~np.isin(input_ids, list(special_ids))
    draw = rng.random(input_ids.shape) < probability
    if continuation is None:
        chosen = content & draw
    else:
        starts = content & ~continuation[np.minimum(input_ids, len(continuation) - 1)]
        positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
        word_start = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
        chosen = content & (starts & draw)[np.arange(len(input_ids))[:, None], word_start]
    if not chosen.any() and content.any():
        chosen[np.argwhere(content)[0][0], np.argwhere(content)[0][1]] = True
    labels = np.where(chosen, input_ids, -100)
    action = rng.random(input_ids.shape)
    mask_id = encoder.tokenizer.mask_token_id
    input_ids = np.where(chosen & (action < 0.8), mask_id, input_ids)
    random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
    input_ids = np.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, input_ids)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": attention,
        "labels": torch.from_numpy(labels),
    }


_MLM_HEADS = ("cls", "lm_head")  # BERT-family / RoBERTa-family (incl. Longformer) masked-LM head attributes


def masked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masked-LM cross-entropy computing vocabulary logits only at the masked positions.

    A Hugging Face ``*ForMaskedLM`` model scores every position against the whole
    vocabulary (``[batch, time, vocab]``, 30k wide for BERT), though only ~15% of the
    positions carry a label; at 256 tokens that projection costs about half the
    encoder's own work. Here the encoder runs, the hidden states of the masked
    positions are picked, and only they go through the model's MLM head. Models whose
    head is not one of the known attributes, and a DDP wrapper (which must be called
    as a whole), fall back to the model's own loss.
    """
    head_name = next((n for n in _MLM_HEADS if isinstance(getattr(model, n, None), torch.nn.Module)), None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if head_name is None or not isinstance(base, torch.nn.Module):
        return model(**batch).loss
    labels = batch["labels"]
    hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    chosen = labels != -100
    logits = getattr(model, head_name)(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


def _load_masked_lm(
    name: str, attention_dropout: float | None, *, tie_new_head: bool = True
) -> tuple[torch.nn.Module, Any, bool]:
    """(masked-LM model, tokenizer, whether the MLM head was created here because the checkpoint had none).

    A created head's output weights are the word embeddings (``tie_new_head``) or
    an untied copy of them, so the MLM loss does not move the input embeddings.
    """
    from transformers import AutoModelForMaskedLM

    location = resolve_encoder(name)
    config, tokenizer = load_config_and_tokenizer(location, name, attention_dropout=attention_dropout)
    if tokenizer.mask_token_id is None:
        raise MedcoderError(f"encoder {name!r}: its tokenizer has no mask token, so it cannot do masked-LM")
    with quiet_transformers():
        model, info = AutoModelForMaskedLM.from_pretrained(location, config=config, output_loading_info=True)
    created = any(not key.startswith(model.base_model_prefix) for key in info.get("missing_keys", []))
    output = model.get_output_embeddings()
    if created and not tie_new_head and output is not None:
        model.config.tie_word_embeddings = False
        output.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    return model, tokenizer, created


def _train_head_first(
    model: torch.nn.Module,
    base: torch.nn.Module,
    blocks: list[np.ndarray],
    make_batch: MakeBatch,
    config: AdaptDomainConfig,
    checkpoint_dir: Path,
    reporter: Reporter,
) -> float:
    """Train the new MLM head alone (the encoder frozen) for ``config.head_first_steps`` steps; its mean train loss."""
    base.requires_grad_(False)
    head = [p for p in model.parameters() if p.requires_grad]
    n_blocks = min(len(blocks), config.head_first_steps * config.train.batch_size)
    head_config = config.train.model_copy(
        update={"epochs": 1, "lr": config.head_lr, "warmup_ratio": 0.0, "early_stopping_metric": "loss"}
    )
    result = _train_masked_lm(
        model,
        blocks[:n_blocks],
        make_batch,
        head_config,
        config,
        reporter,
        title="masked-LM head alone (encoder frozen)",
        checkpoint_dir=checkpoint_dir,
        head=head,
    )
    base.requires_grad_(True)
    return float(result.history[-1]["train_loss"])


def _train_masked_lm(
    model: torch.nn.Module,
    blocks: list[np.ndarray],
    make_batch: MakeBatch,
    train_config: TrainConfig,
    config: AdaptDomainConfig,
    reporter: Reporter,
    *,
    title: str,
    checkpoint_dir: Path,
    evaluate: Evaluate | None = None,
    head: list[torch.nn.Parameter] | None = None,
) -> LoopResult:
    """One masked-LM phase on length-bucketed batches of ``blocks`` (``make_batch`` reads them by index);
    ``head``: the only parameters trained (default: all that require a gradient)."""
    plan = LengthBucketPlan(
        [len(b) for b in blocks], batch_size=config.train.batch_size, seed=config.seed, bucketing=True
    )
    model.train()
    with reporter.task(title, total=None) as update:
        return train_loop(
            model,
            plan,
            make_batch,
            masked_lm_loss,
            train_config,
            evaluate=evaluate,
            checkpoint_dir=checkpoint_dir,
            seed=config.seed,
            progress=update,
            param_groups=None if head is None else [{"params": head}],
        )


def adapt_domain(
    config: AdaptDomainConfig, output_dir: str | Path, *, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Train ``config.encoder`` on ``config.corpus`` by ``config.objective``; writes an encoder folder to ``output_dir``."""
    reporter = reporter or LogReporter()
    output_dir = Path(output_dir)
    check_stage_target(output_dir)
    if config.objective == "simcse":  # a sentence encoder: contrastive, not masked-LM (training/contrastive.py)
        return adapt_contrastive(config, output_dir, reporter)
    texts = read_corpus(config, reporter)  # before the encoder: a bad file fails fast
    model, tokenizer, created_head = _load_masked_lm(
        config.encoder, config.attention_dropout, tie_new_head=config.tie_new_head
    )
    if created_head:
        logger.info(
            "%s has no masked-LM head: a new one is trained (%s)",
            config.encoder,
            "tied to the word embeddings" if config.tie_new_head else "untied",
        )
    subwords = SubwordEncoder(tokenizer)
    train_blocks, dev_blocks = corpus_blocks(texts, subwords, config, reporter)
    n_dev = len(dev_blocks)

    special = set(tokenizer.all_special_ids)
    vocab_size = int(model.get_input_embeddings().weight.shape[0])
    continuation = continuation_pieces(tokenizer) if config.whole_word_masking else None

    def batch_of(chosen: list[np.ndarray], seed: int) -> dict[str, torch.Tensor]:
        return mask_tokens(
            chosen,
            subwords,
            probability=config.mlm_probability,
            vocab_size=vocab_size,
            special_ids=special,
            seed=seed,
            continuation=continuation,
        )

    def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
        return batch_of([train_blocks[i] for i in indices], dropout_seed(config.seed, epoch, step))

    # The held-out masking is drawn once: every epoch is scored on the same masked tokens.
    dev_batches = [
        batch_of(dev_blocks[i : i + config.train.batch_size], dropout_seed(config.seed, _DEV_EPOCH, i))
        for i in range(0, n_dev, config.train.batch_size)
    ]

    def evaluate(trained: torch.nn.Module) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in dev_batches:
            n = int((batch["labels"] != -100).sum())
            total += float(masked_lm_loss(trained, batch)) * n
            count += n
        return {"loss": total / max(count, 1)}

    train_config = config.train.model_copy(update={"early_stopping_metric": "loss"})
    started = time.perf_counter()
    with torch.no_grad():
        before = evaluate(model.eval())["loss"]
    base = getattr(model, model.base_model_prefix)
    start_weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    work_dir = checkpoints_of(output_dir)
    after_head = head_train_loss = None
    if created_head and config.head_first_steps:
        head_train_loss = _train_head_first(model, base, train_blocks, make_batch, config, work_dir / "head", reporter)
        with torch.no_grad():
            after_head = evaluate(model.eval())["loss"]
    if config.freeze_embeddings:
        base.get_input_embeddings().requires_grad_(False)
    result = _train_masked_lm(
        model,
        train_blocks,
        make_batch,
        train_config,
        config,
        reporter,
        title="masked-LM training",
        checkpoint_dir=work_dir / "all",
        evaluate=evaluate,
    )
    model.eval()
    after = float(result.best_score) if result.best_score is not None else evaluate(model)["loss"]
    perplexity = (math.exp(min(before, 50.0)), math.exp(min(after, 50.0)))
    figures = {
        "created_mlm_head": created_head,
        "dev_mlm_loss_before": before,
        "dev_mlm_loss_after_head_first": after_head,
        "head_first_train_loss": head_train_loss,
        "dev_mlm_loss_after": after,
        "dev_perplexity_before": perplexity[0],
        "dev_perplexity_after": perplexity[1],
    }
    summary = f"held-out MLM loss {before:.3f} -> {after:.3f} (perplexity {perplexity[0]:.1f} -> {perplexity[1]:.1f})"
    return finish_stage(
        output_dir,
        model,
        tokenizer,
        config,
        objective="mlm",
        notes=len(texts),
        blocks=(len(train_blocks), n_dev),
        figures=figures,
        start_weights=start_weights,
        seconds=time.perf_counter() - started,
        result=result,
        summary=summary + ("; new MLM head" if created_head else ""),
    )
