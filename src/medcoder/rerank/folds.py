"""Out-of-fold scores: what each base classifier says about a training note it was not trained on.

The train split is cut into K folds (deterministic for a seed). For each fold a
fresh model of the base's config is trained on the other K-1 folds (dev only for
its early stopping) and scores the held-out fold. The reranker learns from those
scores, so the scores it sees on train behave like the ones it will see on new
notes: a code rare in train looks rare, a code absent from the other folds is
not in the model's label space at all (:func:`fold_frequencies`).

Every fold's scores are saved as they are finished (``.npy``, no pickles): a
killed run started again resumes with the next fold.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.io import atomic_write_bytes, atomic_write_json
from medcoder.models.base import DevSet, build_model
from medcoder.progress import Update

logger = logging.getLogger(__name__)


def assign_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold number (0..folds-1) of each of ``n`` notes: a seeded permutation cut into near-equal parts."""
    if n < folds:
        raise MedcoderError(f"{n} training notes cannot be cut into {folds} folds; lower 'folds'")
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def fold_frequencies(y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """int ``[n_notes, n_labels]``: each label's document count in the folds other than the note's own.

    That is the training frequency the note's out-of-fold model saw (0: the code
    was outside its label space).
    """
    y = np.asarray(y, dtype=np.int64)
    total = y.sum(axis=0)
    per_fold = np.stack([y[fold == f].sum(axis=0) for f in range(int(fold.max()) + 1)])
    return total[None, :] - per_fold[fold]


def save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as ``.npy`` at ``path``, atomically (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_array(path: Path) -> np.ndarray:
    """A ``.npy`` written by :func:`save_array` (object arrays, which would need pickles, are refused)."""
    return np.load(path, allow_pickle=False)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (a base's config, the folds, the label codes)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def out_of_fold_scores(
    model_config: Any,
    texts: Sequence[str],
    y: np.ndarray,
    fold: np.ndarray,
    *,
    dev: DevSet,
    seed: int,
    label_codes: Sequence[str],
    label_descriptions: Sequence[str | None],
    label_system: str,
    work_dir: Path,
    progress: Update | None = None,
) -> np.ndarray:
    """float32 ``[n_notes, n_labels]``: each note scored by the model trained without its fold.

    ``work_dir`` keeps each finished fold (and the fold models' checkpoints);
    a fold saved by an earlier run of the same config, folds and labels is reused.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    key = fingerprint(model_config.model_dump(mode="json"), fold.tolist(), list(label_codes), seed)
    meta_file = work_dir / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text(encoding="utf-8")).get("key") != key:
        for stale in work_dir.glob("fold*.npy"):
            stale.unlink()  # another config, folds or label space: those scores do not apply
    atomic_write_json(meta_file, {"key": key})
    n_folds = int(fold.max()) + 1
    out = np.zeros((len(texts), y.shape[1]), dtype=np.float32)
    for f in range(n_folds):
        held = np.flatnonzero(fold == f)
        saved = work_dir / f"fold{f}.npy"
        if saved.is_file():
            scores = load_array(saved)
            if scores.shape == (len(held), y.shape[1]):
                out[held] = scores
                if progress is not None:
                    progress(f + 1, n_folds)
                continue
        kept = np.flatnonzero(fold != f)
        model = build_model(
            model_config,
            n_labels=y.shape[1],
            task="multilabel",
            seed=seed + 1000 * (f + 1),
            label_descriptions=label_descriptions,
            label_codes=label_codes,
            label_system=label_system,
        )
        logger.info("fold %d/%d: training %s on %d notes", f + 1, n_folds, model_config.type, len(kept))
        model.fit([texts[i] for i in kept], y[kept], dev=dev, work_dir=work_dir / f"fold{f}.checkpoints")
        scores = model.predict_scores([texts[i] for i in held]).astype(np.float32)
        save_array(saved, scores)
        shutil.rmtree(work_dir / f"fold{f}.checkpoints", ignore_errors=True)
        out[held] = scores
        if progress is not None:
            progress(f + 1, n_folds)
    return out
