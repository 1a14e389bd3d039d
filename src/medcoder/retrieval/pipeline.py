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

The output folder holds ``biencoder/`` (a sentence-transformers folder),
``retrieval.json`` (settings, fusion parameters, metrics, timings) and ``results.md``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.config.retrieval import RetrievalConfig
from medcoder.data.icd import catalog_entries, normalize_code
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.models.retrieval import cached_index
from medcoder.progress import LogReporter, Reporter
from medcoder.retrieval.biencoder import BiEncoder, align_pairs, hard_triplets, mine_hard_negatives
from medcoder.retrieval.coder import RESULT_FORMAT, retrieve, similarities
from medcoder.retrieval.fusion import (
    SparseScores,
    best_threshold,
    dense_to_sparse,
    fuse,
    novel_suggestions,
    open_set_metrics,
    restrict_to_unseen,
    suggestion_metrics,
    tune_fusion,
    tune_novel_threshold,
)
from medcoder.retrieval.mentions import Mention, MentionExtractor

logger = logging.getLogger(__name__)


def _codable(extractor: MentionExtractor, notes: list[Note], reporter: Reporter, split: str) -> list[list[Mention]]:
    out = []
    with reporter.task(f"mentions of {split} notes", total=len(notes)) as update:
        for i, note in enumerate(notes):
            out.append(extractor.codable(note.text))
            update(i + 1, len(notes))
    return out


def run_retrieval(config: RetrievalConfig, output_dir: str | Path, *, reporter: Reporter | None = None,
                  source: str = "") -> dict[str, Any]:
    """Run the steps above and write the output folder; returns what ``retrieval.json`` holds."""
    from medcoder.training.run import load_dataset

    reporter = reporter or LogReporter()
    output = Path(output_dir)
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    predictor = None
    if config.classifier:  # opened first: a wrong path fails now, not after the training
        from medcoder.inference.predictor import Predictor

        predictor = Predictor.from_dir(config.classifier)
    with reporter.task("reading data"):
        splits = load_dataset(config.data)
    output.mkdir(parents=True, exist_ok=True)
    catalog_codes, catalog_descriptions = catalog_entries(config.index.system, leaves_only=config.index.leaves_only)
    catalog = dict(zip(catalog_codes, catalog_descriptions, strict=True))
    extractor = MentionExtractor(max_tokens=config.mentions.max_tokens)
    mentions = {split: _codable(extractor, notes, reporter, split) for split, notes in splits.items()}
    # catalog spelling ("e119" -> "E11.9"), as the classifier's label space and the index spell codes
    gold = {split: [list(dict.fromkeys(normalize_code(c, config.index.system) for c in n.labels)) for n in notes]
            for split, notes in splits.items()}
    timing["mentions_s"] = time.perf_counter() - clock
    mention_counts = {split: float(np.mean([len(m) for m in ms])) for split, ms in mentions.items()}

    cache_dir = Path(config.index.cache_dir) if config.index.cache_dir else output / "index"
    encoder = BiEncoder.load(config.encoder, max_seq_length=config.max_seq_length)
    training: dict[str, Any] = {"epochs": []}
    if config.train.epochs > 0:
        clock = time.perf_counter()
        with reporter.task("aligning gold codes to mentions"):
            train_pairs = align_pairs(encoder, [[m.text for m in ms] for ms in mentions["train"]], gold["train"],
                                      catalog, min_similarity=config.pairs.min_similarity)
            dev_pairs = align_pairs(encoder, [[m.text for m in ms] for ms in mentions["dev"]], gold["dev"],
                                    catalog, min_similarity=config.pairs.min_similarity)
            pool = [c for split in ("train", "dev") for codes in gold[split] for c in codes]
            dev_triplets = hard_triplets(encoder, dev_pairs, catalog, pool)
        if len(train_pairs) < 2:
            raise MedcoderError(f"only {len(train_pairs)} training pairs: lower pairs.min_similarity "
                                f"({config.pairs.min_similarity}) or check that the notes carry catalog codes")
        timing["align_s"] = time.perf_counter() - clock
        if config.train.hard_negatives:
            clock = time.perf_counter()
            with reporter.task("embedding the catalog with the encoder before training", total=None) as update:
                base_index, _ = cached_index(encoder.encode, encoder.fingerprint(), cache_dir,
                                             system=config.index.system, leaves_only=config.index.leaves_only,
                                             prefixes=config.index.prefixes, progress=update)
            with reporter.task("mining hard negatives"):
                train_pairs = mine_hard_negatives(encoder, train_pairs, gold["train"], base_index, catalog)
            timing["hard_negatives_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with reporter.task("fine-tuning the bi-encoder", total=None) as update:
            training = encoder.fit(
                train_pairs, dev_triplets=dev_triplets,
                epochs=config.train.epochs, batch_size=config.train.batch_size, lr=config.train.lr,
                seed=config.train.seed, progress=update,
            )
        training["dev_pairs"] = len(dev_pairs)
        timing["train_s"] = time.perf_counter() - clock
        encoder.save(output / "biencoder")

    clock = time.perf_counter()
    with reporter.task("embedding the catalog", total=None) as update:
        index, from_cache = cached_index(encoder.encode, encoder.fingerprint(), cache_dir, system=config.index.system,
                                         leaves_only=config.index.leaves_only, prefixes=config.index.prefixes,
                                         progress=update)
    timing["index_s" if not from_cache else "index_load_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    retrieved = {}
    for split in ("dev", "test"):
        with reporter.task(f"retrieving codes for {split} mentions"):
            retrieved[split] = similarities(retrieve(encoder, index, mentions[split], k=config.search.k))
    timing["retrieve_s"] = time.perf_counter() - clock

    seen = {c for codes in gold["train"] for c in codes}
    retrieval_threshold = best_threshold(retrieved["dev"], gold["dev"])
    metrics: dict[str, Any] = {"retrieval": _report(retrieved["test"], gold["test"], seen,
                                                    threshold=retrieval_threshold)}
    fusion_report: dict[str, Any] | None = None
    if predictor is not None:
        probs = {}
        for split in ("dev", "test"):
            with reporter.task(f"classifier scores for {split}"):
                scores = predictor.predict_proba([n.text for n in splits[split]])
                probs[split] = dense_to_sparse(scores, predictor.codes, top=config.fusion.classifier_top)
        classifier_threshold = predictor.bundle.thresholds.global_  # the classifier's own dev-tuned threshold
        with reporter.task("tuning fusion on dev"):
            known = set(predictor.codes)
            params, grid = tune_fusion(probs["dev"], retrieved["dev"], gold["dev"], known=known,
                                       weights=config.fusion.weights, novel_weights=config.fusion.novel_weights,
                                       floors=config.fusion.floors)
        fused_test = fuse(probs["test"], retrieved["test"], weight=params.weight, floor=params.floor,
                          novel_weight=params.novel_weight, known=known)
        metrics["classifier"] = _report(probs["test"], gold["test"], seen, threshold=classifier_threshold)
        metrics["fused"] = _report(fused_test, gold["test"], seen, threshold=params.threshold)
        sweep = []  # what a larger weight on never-seen codes buys (unseen recall) and costs (MAP); chosen on dev
        for novel_weight in config.fusion.novel_weights:
            row: dict[str, Any] = {"novel_weight": novel_weight}
            for split in ("dev", "test"):
                fused = fuse(probs[split], retrieved[split], weight=params.weight, floor=params.floor,
                             novel_weight=novel_weight, known=known)
                report = _report(fused, gold[split], seen)
                row[split] = {"map": report["all"]["map"], "unseen_map": report["unseen"]["map"],
                              "unseen_recall@10": report["unseen"]["recall@10"]}
            sweep.append(row)
        novel_threshold = tune_novel_threshold(retrieved["dev"], gold["dev"], known, top=config.fusion.novel_top)
        suggested = novel_suggestions(retrieved["test"], known, threshold=novel_threshold, top=config.fusion.novel_top)
        metrics["new_code_suggestions"] = suggestion_metrics(suggested, gold["test"], known)
        fusion_report = {"weight": params.weight, "novel_weight": params.novel_weight, "floor": params.floor,
                         "threshold": params.threshold, "novel_weight_sweep": sweep,
                         "novel_threshold": novel_threshold, "novel_top": config.fusion.novel_top,
                         "classifier_threshold": classifier_threshold, "dev_grid": grid}

    result = {
        "format": RESULT_FORMAT, "config": config.model_dump(mode="json"), "source": source,
        "encoder": str(output / "biencoder") if config.train.epochs > 0 else encoder.source,
        "index": {"codes": len(index.codes), "from_cache": from_cache, "folder": str(cache_dir.resolve())},
        "classifier_dir": str(Path(config.classifier).resolve()) if config.classifier else None,
        "retrieval_threshold": retrieval_threshold,
        "mentions_per_note": mention_counts, "training": training, "fusion": fusion_report,
        "metrics": metrics, "timing": timing,
    }
    atomic_write_json(output / "retrieval.json", result)
    atomic_write_text(output / "results.md", render_markdown(result))
    return result


def _report(scores: list[SparseScores], gold: list[list[str]], seen: set[str], *,
            threshold: float | None = None) -> dict[str, Any]:
    unseen_scores, unseen_gold = restrict_to_unseen(scores, gold, seen)
    return {"all": open_set_metrics(scores, gold, threshold=threshold),
            "unseen": open_set_metrics(unseen_scores, unseen_gold)}


def render_markdown(result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    lines = [
        "# Code retrieval (bi-encoder over the ICD-10-CM catalog) and fusion",
        "",
        f"index: {result['index']['codes']:,} codes; mentions per note: "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["mentions_per_note"].items()),
        "",
        "| system | MAP | micro-F1 | recall@10 | MAP (unseen gold) | recall@10 (unseen gold) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("classifier", "retrieval", "fused"):
        if name not in metrics:
            continue
        every, unseen = metrics[name]["all"], metrics[name]["unseen"]
        f1 = f"{every['micro_f1']:.3f}" if "micro_f1" in every else "—"
        lines.append(f"| {name} | {every['map']:.3f} | {f1} | {every['recall@10']:.3f} | {unseen['map']:.3f} | "
                     f"{unseen['recall@10']:.3f} |")
    if result.get("fusion"):
        fusion = result["fusion"]
        lines += ["", f"fusion tuned on dev: weight {fusion['weight']} (classifier codes), "
                      f"{fusion['novel_weight']} (codes it never saw), floor {fusion['floor']}, "
                      f"threshold {fusion['threshold']:.4f}"]
        lines += ["", "Weight on codes the classifier never saw (other fusion settings as tuned; the dev MAP picks):",
                  "", "| novel weight | dev MAP | test MAP | test MAP (unseen gold) | test recall@10 (unseen gold) |",
                  "|---|---|---|---|---|"]
        for row in fusion["novel_weight_sweep"]:
            dev, test = row["dev"], row["test"]
            lines.append(f"| {row['novel_weight']} | {dev['map']:.3f} | {test['map']:.3f} | {test['unseen_map']:.3f} | "
                         f"{test['unseen_recall@10']:.3f} |")
        new = metrics["new_code_suggestions"]
        lines += ["", f"Codes the classifier never saw, suggested apart (up to {fusion['novel_top']} a note, "
                      f"cosine >= {fusion['novel_threshold']:.3f}, tuned on dev): "
                      f"{new['suggested_per_note']:.2f} a note, precision {new['precision']:.3f}, "
                      f"recall {new['recall']:.3f} of the {new['gold_new_assignments']} such test assignments."]
    training = result.get("training") or {}
    if training.get("epochs"):
        lines += ["", f"bi-encoder: {training['pairs']} train pairs, best epoch {training.get('best_epoch')}, "
                      "dev triplet accuracy "
                      f"{training.get('dev_triplet_accuracy_before', float('nan')):.3f} before -> "
                      + ", ".join(f"{e.get('dev_triplet_accuracy', float('nan')):.3f}" for e in training["epochs"])]
    lines += ["", "timing (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timing"].items()), ""]
    return "\n".join(lines)
