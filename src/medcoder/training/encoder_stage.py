"""What every domain-adaptation objective shares: the corpus cut into blocks, a held-out part, the folder it writes.

``medcoder adapt-domain`` trains an encoder on unlabeled in-domain notes, by masked-LM
(``training/adapt_domain.py``) or contrastively (``training/contrastive.py``); both read the corpus,
cut it into blocks and hold some out the same way, and write the same kind of folder: a Hugging Face
model (``config.json``, ``model.safetensors``, tokenizer files) plus ``stage.json``, the held-out
record of how it was made.
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
from medcoder.data.subwords import SubwordEncoder
from medcoder.errors import MedcoderError
from medcoder.io import atomic_directory, atomic_write_json, recover_directory
from medcoder.models.hf_encoders import quiet_transformers
from medcoder.progress import Reporter

logger = logging.getLogger(__name__)

ENCODER_FORMAT = "medcoder.encoder.v1"


def checkpoints_of(output_dir: Path) -> Path:
    """Where a stage's training loop checkpoints (the same command after a kill resumes there), beside its output."""
    return Path(f"{output_dir}.checkpoints")


def check_stage_target(output_dir: Path) -> None:
    """Refuse to write over anything but nothing, an empty folder or an earlier stage's encoder."""
    recover_directory(output_dir, marker="stage.json")
    if output_dir.exists() and not (output_dir / "stage.json").is_file():
        if not output_dir.is_dir() or any(output_dir.iterdir()):
            raise MedcoderError(f"{output_dir}: exists and is not an encoder written by medcoder; choose a new folder")


def read_corpus(config: AdaptDomainConfig, reporter: Reporter) -> list[str]:
    with reporter.task("reading the corpus"):
        return [text for path in config.corpus for text in read_unlabeled_texts(path, config.text_field)]


def cut_into_blocks(ids: list[np.ndarray], content_length: int) -> list[np.ndarray]:
    """Consecutive pieces of at most ``content_length`` tokens of each note (no piece spans two notes)."""
    return [note[i : i + content_length] for note in ids for i in range(0, len(note), content_length)]


def corpus_blocks(
    texts: list[str], subwords: SubwordEncoder, config: AdaptDomainConfig, reporter: Reporter
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training blocks, held-out blocks) of ``config.max_tokens`` tokens with [CLS]/[SEP], split by ``config.seed``."""
    with reporter.task("tokenizing"):
        encoded = subwords.encode(texts, max_tokens=10**9)
        blocks = [b for b in cut_into_blocks(encoded.ids, config.max_tokens - 2) if len(b)]
    if len(blocks) < 2:
        raise MedcoderError(f"the corpus gives {len(blocks)} block(s) of text; domain training needs at least 2")
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
    return train_blocks, dev_blocks


def weight_drift(start: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, float]:
    """How far training moved the encoder: ||W - W0|| / ||W0|| per part (word embeddings, each layer)."""
    base = getattr(model, model.base_model_prefix, model)  # a *ForMaskedLM wraps the encoder; AutoModel is it
    parts: dict[str, list[float]] = {}
    for name, tensor in base.state_dict().items():
        if name not in start or not tensor.is_floating_point():
            continue
        if "word_embeddings" in name:
            part = "word_embeddings"
        elif ".layer." in f".{name}":
            pieces = name.split(".")
            part = f"layer {pieces[pieces.index('layer') + 1]}"
        else:
            continue
        before = start[name].float()
        delta = float((tensor.float() - before).pow(2).sum())
        parts.setdefault(part, [0.0, 0.0])
        parts[part][0] += delta
        parts[part][1] += float(before.pow(2).sum())
    return {part: math.sqrt(d / max(n, 1e-12)) for part, (d, n) in parts.items()}


def write_encoder(output_dir: Path, model: torch.nn.Module, tokenizer: Any, report: dict[str, Any]) -> None:
    """The encoder folder, written whole or not at all: the model, its tokenizer and ``stage.json``."""
    with atomic_directory(output_dir) as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "stage.json", report)


def finish_stage(
    output_dir: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    config: AdaptDomainConfig,
    *,
    objective: str,
    notes: int,
    blocks: tuple[int, int],
    figures: dict[str, Any],
    start_weights: dict[str, torch.Tensor],
    seconds: float,
    result: Any,
    summary: str,
) -> dict[str, Any]:
    """The stage's record (``stage.json``), written with the encoder; the loop's checkpoints go once it is saved.

    ``blocks``: (training, held-out) block counts; ``figures``: what the objective measured (its held-out loss
    before and after, ...); ``result``: the training loop's (best epoch, history).
    """
    n_train, n_dev = blocks
    report = {
        "format": ENCODER_FORMAT,
        "stage": "adapt_domain",
        "objective": objective,
        "started_from": config.encoder,
        "corpus": config.corpus,
        "notes": notes,
        "train_blocks": n_train,
        "dev_blocks": n_dev,
        "block_tokens": config.max_tokens,
        **figures,
        "weight_drift": weight_drift(start_weights, model),
        "seconds": seconds,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "config": config.model_dump(mode="json"),
        "summary": f"{summary}; {n_train} training blocks of <= {config.max_tokens} tokens",
    }
    write_encoder(output_dir, model, tokenizer, report)
    shutil.rmtree(checkpoints_of(output_dir), ignore_errors=True)
    return report
