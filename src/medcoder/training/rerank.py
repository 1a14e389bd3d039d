"""``medcoder train`` on a ``kind: rerank`` config: bases -> out-of-fold scores -> features -> ranker -> bundle.

Steps (each timed, each with progress; every step's output is kept in the work
folder, ``OUTPUT.work/``, so a killed run started again resumes after the last
finished step or fold):

1. read the notes, fit the label space on train, cut train into K folds;
2. per base classifier: K fold models score their held-out folds (out-of-fold
   train scores); one model trained on all of train (a normal model bundle,
   thresholds tuned on dev) scores dev and test;
3. retrieval evidence of every note (when configured): every mention searches
   the catalog index of the untrained sentence encoder;
4. candidates and features of every split; a ranker per candidate count k,
   dev MAP picks k (and stops each ranker's boosting);
5. calibration chosen and fitted on dev (ECE@20 by cross-validation over dev
   notes), then the decision threshold by dev micro-F1;
6. test scored once: the reranker, each base alone, retrieval alone, the
   hand-set fusion of the first base with retrieval (tuned on dev) and, with
   ``leave_one_out``, the reranker retrained without each signal in turn;
7. the bundle (kind ``rerank``, :mod:`medcoder.inference.rerank`) is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from medcoder.bundles import TrainedSystem, check_bundle_target, read_header
from medcoder.config.rerank import RerankConfig
from medcoder.config.run import RunConfig
from medcoder.data.dataset import fit_label_space, load_dataset
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.errors import MedcoderError
from medcoder.evaluation.calibration import CALIBRATION_METHODS, choose_calibrator, reliability
from medcoder.evaluation.open_set import evaluate_open_set, tune_open_set_threshold
from medcoder.evaluation.report import render_rerank_report
from medcoder.evaluation.scoring import ECE_TOP_K
from medcoder.inference.model import ModelCoder
from medcoder.inference.rerank import RerankCoder, top_pairs
from medcoder.io import atomic_write_json
from medcoder.models.base import DevSet
from medcoder.progress import LogReporter, Reporter, Update
from medcoder.rerank.features import RETRIEVAL, Candidates, FeatureBuilder, SplitSignals, unseen_reach
from medcoder.rerank.folds import (
    assign_folds,
    fingerprint,
    fold_frequencies,
    load_array,
    out_of_fold_scores,
    save_array,
)
from medcoder.rerank.lexical import note_stems
from medcoder.rerank.ranker import Ranker
from medcoder.rerank.signals import (
    evidence_from_json,
    evidence_to_json,
    mentions_from_json,
    mentions_to_json,
    note_evidence,
    note_mentions,
)
from medcoder.retrieval.fusion import dense_to_sparse, fuse, tune_fusion
from medcoder.training.run import train_run

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def _base_bundle(config: RerankConfig, index: int, folder: Path, reporter: Reporter) -> ModelCoder:
    """The base trained on all of train: a normal model bundle (reused when an earlier run finished it)."""
    base = config.bases[index]
    run = RunConfig(
        name=f"{config.name}-{base.name}",
        seed=base.seed,
        task=config.task,
        data=config.data,
        labels=config.labels,
        model=base.model,
    )
    stored = read_header(folder).get("run") if (folder / "config.json").is_file() else None
    if stored != run.model_dump(mode="json"):  # none yet, or made from another config: train it
        if stored is not None:
            logger.info("base %s: the saved model was made from another config; training it again", base.name)
        train_run(run, folder, reporter=reporter)
    return ModelCoder.open(folder)


def _retrieval_evidence(config: RerankConfig, splits: dict[str, list[Note]], work: Path, reporter: Reporter) -> Any:
    """Per split, the retrieval evidence of each note (cached in the work folder); also the encoder and index."""
    from medcoder.retrieval.biencoder import BiEncoder
    from medcoder.retrieval.index import cached_index, default_cache_dir, index_folder
    from medcoder.retrieval.mentions import MentionExtractor, mention_catalog

    assert config.retrieval is not None
    settings = config.retrieval
    encoder = BiEncoder.load(settings.encoder, max_seq_length=settings.max_seq_length)
    cache_dir = Path(settings.index.cache_dir) if settings.index.cache_dir else default_cache_dir()
    encoder_key = encoder.fingerprint()  # a hash of its weight files: computed once
    with reporter.task("embedding the catalog (cached per encoder)", total=None) as update:
        index, _ = cached_index(
            encoder.encode,
            encoder_key,
            cache_dir,
            system=settings.index.system,
            leaves_only=settings.index.leaves_only,
            prefixes=settings.index.prefixes,
            progress=update,
        )
    extractor = MentionExtractor(max_tokens=settings.mentions.max_tokens, catalog=mention_catalog(config.labels.system))
    out, vectors = {}, {}
    for split, notes in splits.items():
        texts = [n.text for n in notes]
        key = fingerprint(settings.model_dump(mode="json"), encoder_key, texts)
        folder = work / "retrieval"
        cached = _read_cache(folder / f"{split}.json", key)
        saved = folder / f"{split}.{key}.vectors.npy", folder / f"{split}.{key}.offsets.npy"
        if cached is not None and all(p.is_file() for p in saved):
            out[split] = evidence_from_json(cached)
            vectors[split] = _split_rows(load_array(saved[0]), load_array(saved[1]))
            continue
        kept: list[np.ndarray] = []
        with reporter.task(f"retrieving codes for the mentions of {split} notes", total=len(notes)) as update:
            out[split] = note_evidence(
                encoder, index, extractor, texts, k=settings.k, progress=update, keep_vectors=kept
            )
        vectors[split] = kept
        for stale in folder.glob(f"{split}.*.npy"):
            stale.unlink()
        save_array(saved[0], np.concatenate(kept) if kept else np.zeros((0, index.dim), dtype=np.float32))
        save_array(saved[1], np.cumsum([0, *(len(v) for v in kept)]))
        atomic_write_json(folder / f"{split}.json", {"key": key, "data": evidence_to_json(out[split])})
    folder = index_folder(
        cache_dir,
        encoder_key,
        system=settings.index.system,
        leaves_only=settings.index.leaves_only,
        prefixes=settings.index.prefixes,
    )
    return out, vectors, encoder, (index, folder)


def _split_rows(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """The per-note blocks of a flat array cut at ``offsets`` (``[0, end of note 0, end of note 1, ...]``)."""
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _read_cache(path: Path, key: str) -> Any:
    """What an earlier run of the same settings saved at ``path`` (None: nothing, or made from other settings)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved.get("data") if isinstance(saved, dict) and saved.get("key") == key else None


def _per_split_cached(
    folder: Path,
    splits: dict[str, list[Note]],
    settings: Any,
    compute: Callable[[list[str], Update], Any],
    dump: Callable[[Any], Any],
    read: Callable[[Any], Any],
    reporter: Reporter,
    task: str,
) -> dict[str, Any]:
    """``compute(texts, progress)`` of each split, kept in ``folder/<split>.json`` under a key of ``settings`` and
    the notes: a later run with the same settings and notes reads it back instead of computing it again."""
    out = {}
    for split, notes in splits.items():
        texts = [n.text for n in notes]
        key = fingerprint(settings, texts)
        cached = _read_cache(folder / f"{split}.json", key)
        if cached is not None:
            out[split] = read(cached)
            continue
        with reporter.task(task.format(split=split), total=len(notes)) as update:
            out[split] = compute(texts, update)
        atomic_write_json(folder / f"{split}.json", {"key": key, "data": dump(out[split])})
    return out


def _mentions(config: RerankConfig, splits: dict[str, list[Note]], work: Path, reporter: Reporter) -> dict[str, Any]:
    """Per split, the stems of each note's codable and excluded mentions (cached in the work folder)."""
    from medcoder.retrieval.mentions import MentionExtractor, mention_catalog

    max_tokens = config.retrieval.mentions.max_tokens if config.retrieval is not None else 10
    catalog = mention_catalog(config.labels.system)
    extractor = MentionExtractor(max_tokens=max_tokens, catalog=catalog)
    return _per_split_cached(
        work / "mentions",
        splits,
        max_tokens if catalog == "icd10cm" else [max_tokens, catalog],
        lambda texts, update: note_mentions(extractor, texts, progress=update),
        mentions_to_json,
        mentions_from_json,
        reporter,
        "mentions of {split} notes",
    )


def _gold(labels: LabelSpace, notes: list[Note]) -> list[list[str]]:
    return [labels.map_labels(note.labels) for note in notes]


def run_rerank(config: RerankConfig, output_dir: str | Path, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the steps above and write the rerank bundle; returns what its ``config.json`` holds."""
    reporter = reporter or LogReporter()
    output = Path(output_dir)
    check_bundle_target(output)
    work = Path(config.work_dir) if config.work_dir else Path(f"{output}.work")
    work.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    with reporter.task("reading data"):
        splits = load_dataset(config.data)
    labels = fit_label_space(config.labels, "multilabel", splits["train"])
    if len(labels) < 2:
        raise MedcoderError(f"the label space has {len(labels)} label(s); need at least 2")
    codes = list(labels.codes)
    texts = {s: [n.text for n in notes] for s, notes in splits.items()}
    y = {s: labels.transform([n.labels for n in notes]) for s, notes in splits.items()}
    gold = {s: _gold(labels, notes) for s, notes in splits.items()}
    fold = assign_folds(len(splits["train"]), config.folds, config.seed)
    train_freq = np.array([labels.train_freq.get(c, 0) for c in codes], dtype=np.int64)
    freq = {
        "train": fold_frequencies(y["train"], fold),
        "dev": np.broadcast_to(train_freq, y["dev"].shape),
        "test": np.broadcast_to(train_freq, y["test"].shape),
    }
    timing["read_s"] = time.perf_counter() - clock

    # 2. bases: out-of-fold train scores, and the full model for dev / test
    dev_set = DevSet(texts["dev"], y["dev"])
    scores: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    base_records = {}
    for b, base in enumerate(config.bases):
        clock = time.perf_counter()
        with reporter.task(
            f"{base.name}: out-of-fold scores of train ({config.folds} folds)", total=config.folds
        ) as up:
            scores["train"][base.name] = out_of_fold_scores(
                base.model,
                texts["train"],
                y["train"],
                fold,
                dev=dev_set,
                seed=base.seed,
                label_codes=codes,
                label_descriptions=labels.descriptions(),
                label_system=labels.system,
                work_dir=work / "oof" / base.name,
                progress=up,
            )
        timing[f"{base.name}.out_of_fold_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        coder = _base_bundle(config, b, work / "bases" / base.name, reporter)
        if coder.codes != codes:
            raise MedcoderError(f"base {base.name}: its label space differs from the reranker's")
        with reporter.task(f"{base.name}: scoring dev and test"):
            for split in ("dev", "test"):
                scores[split][base.name] = coder.bundle.model.predict_scores(texts[split]).astype(np.float32)
        timing[f"{base.name}.full_model_s"] = time.perf_counter() - clock
        base_records[base.name] = {"folder": f"bases/{base.name}", "type": base.model.type}

    # 3. retrieval evidence
    evidence: dict[str, Any] = {s: None for s in SPLITS}
    vectors: dict[str, Any] = {s: None for s in SPLITS}
    encoder = index = None
    if config.retrieval is not None:
        clock = time.perf_counter()
        evidence, vectors, encoder, index = _retrieval_evidence(config, splits, work, reporter)
        timing["retrieval_s"] = time.perf_counter() - clock

    mentions: dict[str, Any] = {s: None for s in SPLITS}
    if "mentions" in config.features:
        clock = time.perf_counter()
        mentions = _mentions(config, splits, work, reporter)
        timing["mentions_s"] = time.perf_counter() - clock

    # 4. candidates, features, ranker per k
    clock = time.perf_counter()
    builder = FeatureBuilder.for_config(
        config, codes, labels.system, labels.descriptions(), index=index[0] if index is not None else None
    )
    k_max = max(config.candidates)
    signals = {
        s: SplitSignals(
            note_stems(texts[s]),
            scores[s],
            np.asarray(freq[s]),
            evidence[s],
            gold[s],
            mentions[s],
            mention_vectors=vectors[s],
            freq_scale=config.folds / (config.folds - 1) if s == "train" else 1.0,
        )
        for s in SPLITS
    }
    candidates: dict[str, Candidates] = {}
    for split in SPLITS:
        with reporter.task(f"features of {split} candidates"):
            candidates[split] = builder.build(signals[split], k_max)
    timing["features_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    all_sources = list(range(len(builder.sources)))
    all_columns = builder.columns_without(None)
    per_k = []
    best: tuple[float, int, Ranker, dict] | None = None
    for k in config.candidates:
        train_k, dev_k = (candidates[s].subset(k, all_sources, all_columns) for s in ("train", "dev"))
        with reporter.task(f"training the ranker on {len(train_k.codes):,} candidates (k = {k})"):
            ranker, record = Ranker.fit(train_k, dev_k, config.ranker, seed=config.seed)
        recall = float(dev_k.y.sum() / max(1, dev_k.n_gold.sum()))
        per_k.append({"k": k, "dev_map": record["dev_map"], "dev_candidate_recall": recall, **record})
        if best is None or record["dev_map"] > best[0]:
            best = (record["dev_map"], k, ranker, record)
    assert best is not None
    _, k, ranker, ranker_record = best
    seen = {c for c, n in labels.train_freq.items() if n > 0}
    final = {s: candidates[s].subset(k, all_sources, all_columns) for s in SPLITS}
    per_gain = []
    if config.unseen_gains != [1.0]:
        train_k, dev_k = final["train"], final["dev"]
        fits = {}
        for gain in config.unseen_gains:
            if gain == 1.0:
                fits[gain] = (ranker, ranker_record)
            else:
                with reporter.task(f"training the ranker with unseen gold codes counting {gain}x (k = {k})"):
                    fits[gain] = Ranker.fit(train_k, dev_k, config.ranker, seed=config.seed, unseen_gain=gain)
            rows = dev_k.per_note(fits[gain][0].score(dev_k))
            on_dev = evaluate_open_set(rows, gold["dev"], seen, threshold=float("inf"), train_codes=list(seen))
            per_gain.append(
                {"gain": gain, "dev_map": on_dev["all"]["map"], "dev_unseen_recall@10": on_dev["unseen"]["recall@10"]}
            )
        reaching = [
            r
            for r in per_gain
            if config.unseen_recall_target and r["dev_unseen_recall@10"] >= config.unseen_recall_target
        ]
        chosen = reaching[0] if reaching else max(per_gain, key=lambda r: r["dev_map"])
        ranker, ranker_record = fits[chosen["gain"]]
    unseen_gain = ranker_record.get("unseen_gain", 1.0)
    timing["ranker_s"] = time.perf_counter() - clock

    # 5. calibration and threshold on dev
    clock = time.perf_counter()
    dev_raw = ranker.score(final["dev"])
    pair_scores, pair_gold, pair_note = top_pairs(final["dev"], dev_raw, k=ECE_TOP_K)
    methods = CALIBRATION_METHODS if config.calibration == "auto" else (config.calibration,)
    calibrator, choice = choose_calibrator(pair_scores, pair_gold, pair_note, methods=methods, seed=config.seed)
    dev_scores = final["dev"].per_note(calibrator(dev_raw))
    threshold = tune_open_set_threshold(dev_scores, gold["dev"])
    timing["calibration_s"] = time.perf_counter() - clock

    # 6. test, once; the comparison rows
    clock = time.perf_counter()
    test_raw = ranker.score(final["test"])
    test_scores = final["test"].per_note(calibrator(test_raw))

    def figures(rows_dev: list[dict[str, float]], rows_test: list[dict[str, float]]) -> dict[str, Any]:
        threshold = tune_open_set_threshold(rows_dev, gold["dev"])
        return evaluate_open_set(rows_test, gold["test"], seen, threshold=threshold, train_codes=train_codes)

    train_codes = list(labels.train_freq)
    metrics: dict[str, Any] = {
        "reranker": evaluate_open_set(test_scores, gold["test"], seen, threshold=threshold, train_codes=train_codes)
    }
    metrics["reranker"]["dev_map"] = ranker_record["dev_map"]
    for base in config.bases:
        metrics[base.name] = figures(
            dense_to_sparse(scores["dev"][base.name], codes), dense_to_sparse(scores["test"][base.name], codes)
        )
    if config.retrieval is not None:
        best_cos = {s: [{c: ev.best for c, ev in note.items() if ev.n_codable} for note in evidence[s]] for s in SPLITS}
        metrics[RETRIEVAL] = figures(best_cos["dev"], best_cos["test"])
        first = config.bases[0].name
        # the fusion of the earlier issues kept the classifier's 200 best codes a note (a grid of 180 settings on dev)
        classifier = {s: dense_to_sparse(scores[s][first], codes, top=min(200, len(codes))) for s in ("dev", "test")}
        params, _ = tune_fusion(classifier["dev"], best_cos["dev"], gold["dev"], known=set(codes))
        fused = {
            s: fuse(
                classifier[s],
                best_cos[s],
                weight=params.weight,
                floor=params.floor,
                novel_weight=params.novel_weight,
                known=set(codes),
            )
            for s in ("dev", "test")
        }
        metrics[f"fusion ({first} + retrieval)"] = figures(fused["dev"], fused["test"])
        metrics[f"fusion ({first} + retrieval)"]["params"] = {
            "weight": params.weight,
            "novel_weight": params.novel_weight,
            "floor": params.floor,
        }
    reach = unseen_reach(final["test"], builder.sources, test_scores, gold["test"], seen)
    calibration = {
        "method": calibrator.method,
        "requested": config.calibration,
        "choice": choice,
        "k": ECE_TOP_K,
        "test": {
            "before": reliability(*top_pairs(final["test"], expit(test_raw), k=ECE_TOP_K)[:2]),
            "after": reliability(*top_pairs(final["test"], calibrator(test_raw), k=ECE_TOP_K)[:2]),
        },
        "dev": {
            "before": reliability(expit(pair_scores), pair_gold),
            "after": reliability(calibrator(pair_scores), pair_gold),
        },
    }
    timing["test_s"] = time.perf_counter() - clock

    leave_one_out = {}
    if config.leave_one_out:
        clock = time.perf_counter()
        for dropped in [*builder.sources, *config.features]:
            sources = [i for i, s in enumerate(builder.sources) if s != dropped]
            if not sources:
                continue
            columns = builder.columns_without(dropped)
            parts = {s: candidates[s].subset(k, sources, columns) for s in SPLITS}
            with reporter.task(f"ranker without {dropped}"):
                other, record = Ranker.fit(
                    parts["train"], parts["dev"], config.ranker, seed=config.seed, unseen_gain=unseen_gain
                )
            rows = {s: parts[s].per_note(other.score(parts[s])) for s in ("dev", "test")}
            leave_one_out[dropped] = figures(rows["dev"], rows["test"]) | {"dev_map": record["dev_map"]}
        timing["leave_one_out_s"] = time.perf_counter() - clock

    record = {
        "name": config.name,
        "labels": {"codes": len(codes), "system": labels.system},
        "split_sizes": {s: len(n) for s, n in splits.items()},
        "bases": base_records,
        "features": builder.names,
        "candidates": {"k": k, "per_k": per_k},
        "unseen_gain": {"chosen": unseen_gain, "target": config.unseen_recall_target, "per_gain": per_gain},
        "ranker": ranker_record | {"importance": ranker.importance()},
        "threshold": threshold,
        "calibration": calibration,
        "metrics": metrics,
        "leave_one_out": leave_one_out,
        "unseen_reach": reach,
        "timing": timing,
    }
    RerankCoder.save(
        output,
        config=config,
        record=record,
        bases={base.name: work / "bases" / base.name for base in config.bases},
        ranker=ranker,
        calibrator=calibrator,
        retrieval=(encoder, index) if encoder is not None else None,
        report=render_rerank_report,
    )
    if config.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return record


def train_rerank(config: RerankConfig, output: Path, *, reporter: Reporter, source: str = "") -> TrainedSystem:
    """``medcoder train`` on a ``kind: rerank`` config, with the run's report."""
    record = run_rerank(config, output, reporter=reporter)
    return TrainedSystem(Path(output), render_rerank_report(record), what="reranked system")
