"""Transfer-learning stages that produce encoders for later stages.

Stage 1, :func:`adapt_domain`: continue masked-LM training of an encoder on
unlabeled in-domain text. A checkpoint without an MLM head (MiniLM as shipped,
most sentence encoders) gets a new one, tied to the word embeddings. The
output folder is a plain Hugging Face model folder (``config.json``,
``model.safetensors``, tokenizer files) plus ``stage.json`` saying how it was
made, so ``encoder: <folder>`` in a ``transformer.v1`` config, or another
stage, starts from it.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcoder.config.adapt_domain import AdaptDomainConfig
from medcoder.data.dataset import read_unlabeled_texts
from medcoder.data.encoding import LengthBucketPlan, dropout_seed
from medcoder.data.subwords import SubwordEncoder, collate_truncated
from medcoder.engine.loop import train_loop
from medcoder.errors import MedcoderError
from medcoder.io import atomic_directory, atomic_write_json, recover_directory
from medcoder.models.hf_encoders import load_config_and_tokenizer, quiet_transformers, resolve_encoder
from medcoder.progress import LogReporter, Reporter

logger = logging.getLogger(__name__)

ENCODER_FORMAT = "medcoder.encoder.v1"
_DEV_EPOCH = 2**31 - 1  # the masking stream of the held-out blocks: an "epoch" training never reaches


def cut_into_blocks(ids: list[np.ndarray], content_length: int) -> list[np.ndarray]:
    """Consecutive pieces of at most ``content_length`` tokens of each note (no piece spans two notes)."""
    return [note[i : i + content_length] for note in ids for i in range(0, len(note), content_length)]


def mask_tokens(
    blocks: list[np.ndarray],
    encoder: SubwordEncoder,
    *,
    probability: float,
    vocab_size: int,
    special_ids: set[int],
    seed: int,
) -> dict[str, torch.Tensor]:
    """BERT masking of ``[CLS] block [SEP]`` rows: of the chosen content tokens 80% [MASK], 10% random, 10% kept.

    Returns input_ids/attention_mask/labels ``[batch, time]``; labels are -100 except at
    chosen positions. The choice depends only on ``seed``; at least one token is chosen.
    """
    rng = np.random.default_rng(seed)
    rows = collate_truncated(encoder, blocks, range(len(blocks)))
    input_ids, attention = rows["input_ids"].numpy(), rows["attention_mask"]
    content = rows["content_index"].numpy() >= 0
    content &= ~np.isin(input_ids, list(special_ids))
    chosen = content & (rng.random(input_ids.shape) < probability)
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


def _load_masked_lm(name: str, attention_dropout: float | None) -> tuple[torch.nn.Module, Any, bool]:
    """(masked-LM model, tokenizer, whether the MLM head was created here because the checkpoint had none)."""
    from transformers import AutoModelForMaskedLM

    location = resolve_encoder(name)
    config, tokenizer = load_config_and_tokenizer(location, name, attention_dropout=attention_dropout)
    if tokenizer.mask_token_id is None:
        raise MedcoderError(f"encoder {name!r}: its tokenizer has no mask token, so it cannot do masked-LM")
    with quiet_transformers():
        model, info = AutoModelForMaskedLM.from_pretrained(location, config=config, output_loading_info=True)
    created = any(not key.startswith(model.base_model_prefix) for key in info.get("missing_keys", []))
    return model, tokenizer, created


def adapt_domain(
    config: AdaptDomainConfig, output_dir: str | Path, *, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Masked-LM training of ``config.encoder`` on ``config.corpus``; writes an encoder folder to ``output_dir``."""
    reporter = reporter or LogReporter()
    output_dir = Path(output_dir)
    recover_directory(output_dir, marker="stage.json")
    if output_dir.exists() and not (output_dir / "stage.json").is_file():
        if not output_dir.is_dir() or any(output_dir.iterdir()):
            raise MedcoderError(f"{output_dir}: exists and is not an encoder written by medcoder; choose a new folder")
    with reporter.task("reading the corpus"):  # before the encoder: a bad file fails fast
        texts = [text for path in config.corpus for text in read_unlabeled_texts(path, config.text_field)]
    model, tokenizer, created_head = _load_masked_lm(config.encoder, config.attention_dropout)
    if created_head:
        logger.info("%s has no masked-LM head: a new one is trained (tied to the word embeddings)", config.encoder)
    subwords = SubwordEncoder(tokenizer)
    with reporter.task("tokenizing"):
        encoded = subwords.encode(texts, max_tokens=10**9)
        blocks = [b for b in cut_into_blocks(encoded.ids, config.max_tokens - 2) if len(b)]
    if len(blocks) < 2:
        raise MedcoderError(f"the corpus gives {len(blocks)} block(s) of text; masked-LM training needs at least 2")
    order = np.random.default_rng(config.seed).permutation(len(blocks))
    n_dev = max(1, int(round(config.dev_fraction * len(blocks))))
    dev_blocks = [blocks[i] for i in order[:n_dev]]
    train_blocks = [blocks[i] for i in order[n_dev:]]
    if config.max_blocks is not None:
        train_blocks = train_blocks[: config.max_blocks]
    logger.info(
        "%d notes -> %d training and %d held-out blocks of <= %d tokens",
        len(texts),
        len(train_blocks),
        n_dev,
        config.max_tokens,
    )

    special = set(tokenizer.all_special_ids)
    vocab_size = int(model.get_input_embeddings().weight.shape[0])

    def batch_of(chosen: list[np.ndarray], seed: int) -> dict[str, torch.Tensor]:
        return mask_tokens(
            chosen, subwords, probability=config.mlm_probability, vocab_size=vocab_size, special_ids=special, seed=seed
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
    plan = LengthBucketPlan(
        [len(b) for b in train_blocks], batch_size=config.train.batch_size, seed=config.seed, bucketing=True
    )
    with torch.no_grad():
        before = evaluate(model.eval())["loss"]
    model.train()
    work_dir = Path(f"{output_dir}.checkpoints")
    with reporter.task("masked-LM training", total=None) as update:
        result = train_loop(
            model,
            plan,
            make_batch,
            masked_lm_loss,
            train_config,
            evaluate=evaluate,
            checkpoint_dir=work_dir,
            seed=config.seed,
            progress=update,
        )
    model.eval()
    after = float(result.best_score) if result.best_score is not None else evaluate(model)["loss"]
    report = {
        "format": ENCODER_FORMAT,
        "stage": "adapt_domain",
        "started_from": config.encoder,
        "created_mlm_head": created_head,
        "corpus": config.corpus,
        "notes": len(texts),
        "train_blocks": len(train_blocks),
        "dev_blocks": n_dev,
        "block_tokens": config.max_tokens,
        "dev_mlm_loss_before": before,
        "dev_mlm_loss_after": after,
        "dev_perplexity_before": math.exp(min(before, 50.0)),
        "dev_perplexity_after": math.exp(min(after, 50.0)),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "config": config.model_dump(mode="json"),
    }
    with atomic_directory(output_dir) as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "stage.json", report)
    shutil.rmtree(work_dir, ignore_errors=True)
    return report
