"""Domain adaptation for sentence encoders: unsupervised SimCSE (Gao et al. 2021) on unlabeled in-domain notes.

A sentence encoder (MiniLM as shipped, any sentence-transformers model) was trained contrastively,
not by masked-LM, and has no MLM head: masked-LM training pulls it away from what it learned (on
CodiEsp it cost the frozen label-attention coder 0.037 test MAP). SimCSE keeps its objective: each
block of a note is encoded twice, under two dropout masks; the two views of a block must be closer
to each other than to every other block of the batch (cross-entropy over the cosine similarities of
the mean-pooled embeddings, divided by ``temperature``). The held-out record is the same loss on the
held-out blocks, with dropout drawn from a fixed seed so every epoch is scored on the same views.
With ``catalog: icd10cm`` the batches also hold pairs from the catalog: an inclusion term of a code
("Jungle yellow fever") and the code's description ("Sylvatic yellow fever") are each other's positive,
the other rows of the batch the negatives (never two rows of the same code). That teaches the encoder
the catalog's own synonyms without a labelled note, so its evidence on training notes stays as honest
as on new ones. 5% of the codes are held out: their pairs score the held-out loss, and the share of
their terms whose nearest held-out description is their own code's (term -> description accuracy).
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
    """SimCSE: row i's positive is its own other view; every other row of the batch is a negative.

    ``batch``: input_ids / attention_mask ``[batch, time]``; the model must be in train mode (dropout on).
    Without ``positive_ids`` the other view is the same text under another dropout mask (unsupervised);
    with ``positive_ids`` / ``positive_mask`` it is that text (a catalog pair), and ``group`` ``[batch]``
    marks rows that must not be each other's negatives (two terms of one code).
    """
    first = mean_pooled(model, batch)
    if "positive_ids" in batch:
        second = mean_pooled(model, {"input_ids": batch["positive_ids"], "attention_mask": batch["positive_mask"]})
    else:
        second = mean_pooled(model, batch)
    similarities = first @ second.T / temperature  # [batch, batch]
    if "group" in batch:
        group = batch["group"]
        same = (group[:, None] == group[None, :]) & ~torch.eye(len(group), dtype=torch.bool)
        similarities = similarities.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(similarities, torch.arange(len(first)))


def catalog_pairs(system: str) -> list[tuple[str, str, str]]:
    """(inclusion term, the code's description, code) of every code of the catalog that lists terms."""
    from medcoder.data.icd import catalog_entries, inclusion_terms

    codes, descriptions = catalog_entries(system)
    return [
        (term, description, code)
        for code, description in zip(codes, descriptions, strict=True)
        for term in inclusion_terms(code, system)
        if term.strip().lower() != description.strip().lower()
    ]


def _held_out_codes(pairs: list[tuple[str, str, str]], fraction: float, seed: int) -> set[str]:
    codes = sorted({code for _, _, code in pairs})
    order = np.random.default_rng(seed).permutation(len(codes))
    return {codes[i] for i in order[: max(1, int(round(fraction * len(codes))))]}


def term_accuracy(model: torch.nn.Module, subwords: SubwordEncoder, pairs: list[tuple[Any, Any, int]]) -> float:
    """Share of the terms whose nearest description (cosine, among the pairs' distinct ones) is their code's.

    ``pairs``: (term token ids, description token ids, code number), as the training batches hold them.
    """
    if not pairs:
        return float("nan")
    descriptions = {number: description for _, description, number in pairs}  # one description per code
    column = {number: j for j, number in enumerate(descriptions)}

    def embed(ids: list[np.ndarray]) -> torch.Tensor:
        out = []
        for start in range(0, len(ids), 64):
            rows = collate_truncated(subwords, ids, range(start, min(start + 64, len(ids))))
            out.append(mean_pooled(model, {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}))
        return torch.cat(out)

    mode = model.training
    model.eval()
    with torch.no_grad():
        terms = embed([term for term, _, _ in pairs])
        targets = embed(list(descriptions.values()))
        nearest = (terms @ targets.T).argmax(dim=1).tolist()
    model.train(mode)
    return float(np.mean([n == column[number] for n, (_, _, number) in zip(nearest, pairs, strict=True)]))


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
    # the items of a batch: a block (its own positive), or a catalog pair (term, description, code number)
    train_items: list[Any] = list(train_blocks)
    dev_items: list[Any] = list(dev_blocks)
    dev_pairs: list[tuple[Any, Any, int]] = []  # the held-out codes' pairs, also among dev_items
    if config.catalog != "none":
        with reporter.task(f"reading the {config.catalog} catalog's inclusion terms"):
            pairs = catalog_pairs(config.catalog)
        held = _held_out_codes(pairs, config.dev_fraction, config.seed)
        number = {code: n for n, code in enumerate(sorted({code for _, _, code in pairs}))}
        encoded = subwords.encode([t for pair in pairs for t in pair[:2]], max_tokens=config.max_tokens - 2).ids
        for n, (_, _, code) in enumerate(pairs):
            item = (encoded[2 * n], encoded[2 * n + 1], number[code])
            (dev_pairs if code in held else train_items).append(item)
        dev_items += dev_pairs
        logger.info("catalog: %d term-description pairs, %d of them held out", len(pairs), len(dev_pairs))

    def rows(items: list[Any]) -> dict[str, torch.Tensor]:
        anchors = [item if isinstance(item, np.ndarray) else item[0] for item in items]
        batch = collate_truncated(subwords, anchors, range(len(items)))
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if all(isinstance(item, np.ndarray) for item in items):
            return out  # blocks only: unsupervised SimCSE exactly
        positives = collate_truncated(
            subwords,
            [a if isinstance(i, np.ndarray) else i[1] for a, i in zip(anchors, items, strict=True)],
            range(len(items)),
        )
        # a block is a group of its own (negative ids never meet a code's number)
        group = [-1 - r if isinstance(item, np.ndarray) else item[2] for r, item in enumerate(items)]
        return out | {
            "positive_ids": positives["input_ids"],
            "positive_mask": positives["attention_mask"],
            "group": torch.tensor(group),
        }

    def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, torch.Tensor]:
        return rows([train_items[i] for i in indices])

    size = config.train.batch_size
    # a held-out batch of one item has no negative: nothing to score
    dev_batches = [rows(dev_items[i : i + size]) for i in range(0, len(dev_items), size) if len(dev_items) - i > 1]

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
    accuracy_before = term_accuracy(model, subwords, dev_pairs) if dev_pairs else None
    start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    work_dir = checkpoints_of(output_dir)
    lengths = [len(i) if isinstance(i, np.ndarray) else max(len(i[0]), len(i[1])) for i in train_items]
    plan = LengthBucketPlan(lengths, batch_size=size, seed=config.seed, bucketing=True)
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
    figures: dict[str, Any] = {
        "temperature": config.temperature,
        "dev_contrastive_loss_before": before,
        "dev_contrastive_loss_after": after,
    }
    summary = f"held-out contrastive (SimCSE) loss {before:.3g} -> {after:.3g}"
    if dev_pairs:
        accuracy_after = term_accuracy(model, subwords, dev_pairs)
        figures |= {
            "catalog": config.catalog,
            "catalog_pairs": {"train": len(train_items) - len(train_blocks), "held_out": len(dev_pairs)},
            "dev_term_accuracy_before": accuracy_before,
            "dev_term_accuracy_after": accuracy_after,
        }
        summary += f"; held-out term -> description accuracy {accuracy_before:.3f} -> {accuracy_after:.3f}"
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
        summary=summary,
    )
