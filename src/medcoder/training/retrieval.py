"""``medcoder retrieval``: train the bi-encoder, index the catalog, fuse with a classifier, report.

Steps (each timed, each with progress):
1. read the notes (train/dev/test) and extract their codable mentions;
2. weakly align train (and dev) gold codes to mentions -> (mention, description) pairs;
3. fine-tune the bi-encoder (MultipleNegativesRankingLoss, no code twice in a batch,
   dev triplet accuracy picks the epoch) and save it;
   (with hard negatives: the catalog code the encoder ranks highest for a mention
   that is not one of the note's codes, mined from the untrained encoder's index);
4. embed the whole catalog once (cached per encoder fingerprint);
5. retrieve the top-k codes per mention, aggregate per note;
6. when a classifier bundle is given: tune fusion on dev, then report test metrics
   for the classifier alone, retrieval alone and fused, over all gold codes and
   over gold codes unseen in train.

The output is a bundle of kind ``retrieval`` (:mod:`medcoder.inference.retrieval`):
``biencoder/``, ``index/``, ``classifier/`` (a copy of the classifier bundle),
``config.json`` (settings, fusion parameters, metrics, timings) and ``results.md``.
Bi-encoder checkpoints live in ``OUTPUT.checkpoints/`` until the bundle is saved:
run the same command again after a crash and training resumes there. Catalog
indexes are cached per encoder (``index.cache_dir``, default
:func:`medcoder.retrieval.index.default_cache_dir`) and shared by runs.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.bundles import TrainedSystem, check_bundle_target
from medcoder.config.retrieval import RetrievalConfig
from medcoder.data.dataset import load_dataset
from medcoder.data.icd import catalog_entries, normalize_code
from medcoder.data.records import Note
from medcoder.errors import BundleError, MedcoderError
from medcoder.evaluation.open_set import evaluate_open_set, suggestion_figures, tune_open_set_threshold
from medcoder.evaluation.report import render_retrieval_report
from medcoder.inference.model import ModelCoder
from medcoder.inference.retrieval import RetrievalCoder
from medcoder.progress import LogReporter, Reporter
from medcoder.retrieval.biencoder import BiEncoder, align_pairs, hard_triplets, mine_hard_negatives
from medcoder.retrieval.fusion import (
    dense_to_sparse,
    fuse,
    novel_suggestions,
    retrieve,
    similarities,
    tune_fusion,
    tune_novel_threshold,
)
from medcoder.retrieval.index import cached_index, default_cache_dir, index_folder
from medcoder.retrieval.mentions import Mention, MentionExtractor

logger = logging.getLogger(__name__)


def _codable(extractor: MentionExtractor, notes: list[Note], reporter: Reporter, split: str) -> list[list[Mention]]:
    out = []
    with reporter.task(f"mentions of {split} notes", total=len(notes)) as update:
        for i, note in enumerate(notes):
            out.append(extractor.codable(note.text))
            update(i + 1, len(notes))
    return out


def _open_classifier(path: str) -> ModelCoder:
    """The classifier to fuse with: a single multi-label model bundle (opened first: a wrong path fails at once)."""
    try:
        coder = ModelCoder.open(path)
    except BundleError as exc:
        raise MedcoderError(f"classifier {path}: fusion needs a single model bundle ({exc})") from None
    if coder.bundle.thresholds is None:
        raise MedcoderError(
            f"classifier {path}: fusion needs a multi-label classifier; this one is a {coder.bundle.task} model"
        )
    return coder


def run_retrieval(
    config: RetrievalConfig, output_dir: str | Path, *, reporter: Reporter | None = None, source: str = ""
) -> dict[str, Any]:
    """Run the steps above and write the retrieval bundle; returns what its ``config.json`` holds."""
    reporter = reporter or LogReporter()
    output = Path(output_dir)
    check_bundle_target(output)
    work = Path(f"{output}.checkpoints")  # bi-encoder checkpoints and the trained encoder until the bundle is saved
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    classifier = _open_classifier(config.classifier) if config.classifier else None
    with reporter.task("reading data"):
        splits = load_dataset(config.data)
    catalog_codes, catalog_descriptions = catalog_entries(config.index.system, leaves_only=config.index.leaves_only)
    catalog = dict(zip(catalog_codes, catalog_descriptions, strict=True))
    extractor = MentionExtractor(max_tokens=config.mentions.max_tokens)
    mentions = {split: _codable(extractor, notes, reporter, split) for split, notes in splits.items()}
    # catalog spelling ("e119" -> "E11.9"), as the classifier's label space and the index spell codes
    gold = {
        split: [list(dict.fromkeys(normalize_code(c, config.index.system) for c in n.labels)) for n in notes]
        for split, notes in splits.items()
    }
    timing["mentions_s"] = time.perf_counter() - clock
    mention_counts = {split: float(np.mean([len(m) for m in ms])) for split, ms in mentions.items()}

    cache_dir = Path(config.index.cache_dir) if config.index.cache_dir else default_cache_dir()
    index_options = {
        "system": config.index.system,
        "leaves_only": config.index.leaves_only,
        "prefixes": config.index.prefixes,
    }
    encoder = BiEncoder.load(config.encoder, max_seq_length=config.max_seq_length)
    training: dict[str, Any] = {"epochs": []}
    if config.train.epochs > 0:
        clock = time.perf_counter()
        with reporter.task("aligning gold codes to mentions"):
            train_pairs, dev_pairs = (
                align_pairs(
                    encoder,
                    [[m.text for m in ms] for ms in mentions[split]],
                    gold[split],
                    catalog,
                    min_similarity=config.pairs.min_similarity,
                )
                for split in ("train", "dev")
            )
            pool = [c for split in ("train", "dev") for codes in gold[split] for c in codes]
            dev_triplets = hard_triplets(encoder, dev_pairs, catalog, pool)
        if len(train_pairs) < 2:
            raise MedcoderError(
                f"only {len(train_pairs)} training pairs: lower pairs.min_similarity "
                f"({config.pairs.min_similarity}) or check that the notes carry catalog codes"
            )
        timing["align_s"] = time.perf_counter() - clock
        if config.train.hard_negatives:
            clock = time.perf_counter()
            with reporter.task("embedding the catalog with the encoder before training", total=None) as update:
                base_index, _ = cached_index(
                    encoder.encode, encoder.fingerprint(), cache_dir, progress=update, **index_options
                )
            with reporter.task("mining hard negatives"):
                train_pairs = mine_hard_negatives(encoder, train_pairs, gold["train"], base_index, catalog)
            timing["hard_negatives_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with reporter.task("fine-tuning the bi-encoder", total=None) as update:
            training = encoder.fit(
                train_pairs,
                train=config.train.loop_config(),
                dev_triplets=dev_triplets,
                seed=config.train.seed,
                work_dir=work / "biencoder",
                progress=update,
            )
        training["dev_pairs"] = len(dev_pairs)
        timing["train_s"] = time.perf_counter() - clock
        encoder.save(work / "trained-biencoder")
    elif not Path(encoder.source).is_dir():  # a hub id: the bundle holds a saved copy
        encoder.save(work / "trained-biencoder")

    clock = time.perf_counter()
    fingerprint = encoder.fingerprint()
    with reporter.task("embedding the catalog", total=None) as update:
        index, from_cache = cached_index(encoder.encode, fingerprint, cache_dir, progress=update, **index_options)
    timing["index_s" if not from_cache else "index_load_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    retrieved = {}
    for split in ("dev", "test"):
        with reporter.task(f"retrieving codes for {split} mentions"):
            retrieved[split] = similarities(retrieve(encoder, index, mentions[split], k=config.search.k))
    timing["retrieve_s"] = time.perf_counter() - clock

    seen = {c for codes in gold["train"] for c in codes}
    retrieval_threshold = tune_open_set_threshold(retrieved["dev"], gold["dev"])
    metrics: dict[str, Any] = {
        "retrieval": evaluate_open_set(retrieved["test"], gold["test"], seen, threshold=retrieval_threshold)
    }
    fusion: dict[str, Any] = {"threshold": retrieval_threshold}
    if classifier is not None:
        fusion, metrics = _fuse_with_classifier(classifier, config, splits, retrieved, gold, seen, metrics, reporter)

    record = {
        "source": source,
        "index": {"codes": len(index.codes), "from_cache": from_cache, "encoder_fingerprint": fingerprint},
        "retrieval_threshold": retrieval_threshold,
        "mentions_per_note": mention_counts,
        "training": training,
        "metrics": metrics,
        "timing": timing,
    }
    result = {**record, "config": config.model_dump(mode="json"), "fusion": fusion if classifier else None}
    RetrievalCoder.save(
        output,
        config=config,
        encoder=encoder,
        index=index,
        index_dir=index_folder(cache_dir, fingerprint, **index_options),
        classifier_dir=Path(config.classifier) if config.classifier else None,
        fusion=fusion,
        record=dict(record),
        report=render_retrieval_report(result),
    )
    shutil.rmtree(work, ignore_errors=True)
    return result


def _fuse_with_classifier(
    classifier: ModelCoder,
    config: RetrievalConfig,
    splits: dict[str, list[Note]],
    retrieved: dict[str, Any],
    gold: dict[str, list[list[str]]],
    seen: set[str],
    metrics: dict[str, Any],
    reporter: Reporter,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune the fusion on dev; test figures of the classifier alone and fused, the novel-weight sweep, new codes."""
    probs = {}
    for split in ("dev", "test"):
        with reporter.task(f"classifier scores for {split}"):
            scores = classifier.predict_proba([n.text for n in splits[split]])
            probs[split] = dense_to_sparse(scores, classifier.codes, top=config.fusion.classifier_top)
    classifier_threshold = classifier.bundle.thresholds.global_  # the classifier's own dev-tuned threshold
    with reporter.task("tuning fusion on dev"):
        known = set(classifier.codes)
        params, grid = tune_fusion(
            probs["dev"],
            retrieved["dev"],
            gold["dev"],
            known=known,
            weights=config.fusion.weights,
            novel_weights=config.fusion.novel_weights,
            floors=config.fusion.floors,
        )
    fused_test = fuse(
        probs["test"],
        retrieved["test"],
        weight=params.weight,
        floor=params.floor,
        novel_weight=params.novel_weight,
        known=known,
    )
    metrics = {
        **metrics,
        "classifier": evaluate_open_set(probs["test"], gold["test"], seen, threshold=classifier_threshold),
        "fused": evaluate_open_set(fused_test, gold["test"], seen, threshold=params.threshold),
    }
    sweep = []  # what a larger weight on never-seen codes buys (unseen recall) and costs (MAP); chosen on dev
    for novel_weight in config.fusion.novel_weights:
        row: dict[str, Any] = {"novel_weight": novel_weight}
        for split in ("dev", "test"):
            fused = fuse(
                probs[split],
                retrieved[split],
                weight=params.weight,
                floor=params.floor,
                novel_weight=novel_weight,
                known=known,
            )
            report = evaluate_open_set(fused, gold[split], seen)
            row[split] = {
                "map": report["all"]["map"],
                "unseen_map": report["unseen"]["map"],
                "unseen_recall@10": report["unseen"]["recall@10"],
            }
        sweep.append(row)
    novel_threshold = tune_novel_threshold(retrieved["dev"], gold["dev"], known, top=config.fusion.novel_top)
    suggested = novel_suggestions(retrieved["test"], known, threshold=novel_threshold, top=config.fusion.novel_top)
    metrics["new_code_suggestions"] = suggestion_figures(suggested, gold["test"], known)
    fusion = {
        "weight": params.weight,
        "novel_weight": params.novel_weight,
        "floor": params.floor,
        "threshold": params.threshold,
        "novel_weight_sweep": sweep,
        "novel_threshold": novel_threshold,
        "novel_top": config.fusion.novel_top,
        "classifier_threshold": classifier_threshold,
        "dev_grid": grid,
    }
    return fusion, metrics


def train_retrieval(config: RetrievalConfig, output: Path, *, reporter: Reporter, source: str = "") -> TrainedSystem:
    """``medcoder train`` (or ``medcoder retrieval``) on a ``kind: retrieval`` config, with the run's report."""
    result = run_retrieval(config, output, reporter=reporter, source=source)
    report = render_retrieval_report(result) + f"\nreport: {Path(output) / 'results.md'}\n"
    return TrainedSystem(Path(output), report, what="retrieval system")
