"""A model's test scores turned into the figures METRICS.md defines.

Label spaces (columns are always laid out model codes first, so the ranking
metrics can take the model's block as a slice):

- **all gold** = the model's ``codes`` ∪ train labels ∪ test gold labels. A
  column the model does not score has score 0 and is never predicted, so its
  gold assignments are false negatives.
- **train-seen** = the model's ``codes`` ∪ train labels; gold codes with train
  frequency 0 are removed from the gold sets.

P@k and MAP rank only the model's own columns: a code the model cannot rank
never enters a top-k and adds 0 to the AP sum, while MAP still divides by the
document's full gold count (the CodiEsp rule). Undefined figures (e.g. macro
AUC with no label having both classes) are ``None`` in the returned dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.evaluation import metrics as m
from medcoder.evaluation.thresholds import Thresholds


def _clean(value: float) -> float | None:
    """A plain float, or None for NaN so the dict stays strict JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def _section(
    y: np.ndarray,
    scores: np.ndarray,
    pred: np.ndarray,
    n_model: int,
    unseen_cols: np.ndarray,
    ks: Sequence[int],
    *,
    skip_empty: bool,
) -> dict[str, Any]:
    """Every headline metric for one label space.

    Args:
        y: bool ``[n_docs, n_space]`` gold.
        scores: float ``[n_docs, n_space]``; 0 outside the model's columns.
        pred: bool ``[n_docs, n_space]``; False outside the model's columns.
        n_model: the first ``n_model`` columns are the model's codes.
        unseen_cols: bool ``[n_space]``, columns whose code has train frequency 0.
        ks: cut-offs for P@k.
        skip_empty: leave documents with no gold out of P@k.
    """
    p, r, f1 = m.micro_prf(y, pred)
    has_gold = y.any(axis=1)
    rank_rows = has_gold if skip_empty else np.ones_like(has_gold)
    ranked_y = y[rank_rows, :n_model]
    ranked_scores = scores[rank_rows, :n_model]
    out: dict[str, Any] = {
        "micro_precision": p,
        "micro_recall": r,
        "micro_f1": f1,
        "macro_f1": m.macro_prf(y, pred)[2],
        "macro_f1_with_gold": m.macro_prf(y, pred, labels_mask=y.any(axis=0))[2],
        "micro_auc": m.micro_auc(y, scores),
        "macro_auc": m.macro_auc(y, scores),
    }
    for k in ks:
        out[f"p_at_{k}"] = m.precision_at_k(ranked_y, ranked_scores, k)
    out["map"] = m.mean_average_precision(y[:, :n_model], scores[:, :n_model], n_gold=y.sum(axis=1))
    out["exact_match"] = m.exact_match(y, pred)
    out = {key: _clean(value) for key, value in out.items()}
    out.update(
        n_docs=int(y.shape[0]),
        n_docs_with_gold=int(has_gold.sum()),
        n_labels=int(y.shape[1]),
        n_unseen_codes=int((y.any(axis=0) & unseen_cols).sum()),
        n_unseen_assignments=int(y[:, unseen_cols].sum()),
    )
    return out


def _unseen_gold(
    y: np.ndarray, scores: np.ndarray, n_model: int, unseen_cols: np.ndarray, k: int = 10
) -> dict[str, Any]:
    """MAP and recall@k of the gold codes no train note carries (the convention of the retrieval reports).

    Each note's seen gold codes leave its ranking, so an unseen gold code competes
    only with wrong codes; notes without an unseen gold code drop out; unseen gold
    codes outside the model's columns count as misses (they add 0 to AP and recall).
    """
    gold = y & unseen_cols
    rows = gold.any(axis=1)
    out: dict[str, Any] = {"n_docs": int(rows.sum()), "n_gold": int(gold.sum())}
    if not rows.any():
        return out | {"map": None, f"recall_at_{k}": None}
    ranked = scores[rows, :n_model].copy()
    # seen gold codes leave the ranking: below every other code, where they precede no gold code
    ranked[y[rows, :n_model] & ~unseen_cols[:n_model]] = ranked.min(initial=0.0) - 1.0
    visible = gold[rows, :n_model]
    n_gold = gold[rows].sum(axis=1)
    top = m.rank_order(ranked)[:, :k]
    hits = np.take_along_axis(visible, top, axis=1).sum()
    return out | {
        "map": _clean(m.mean_average_precision(visible, ranked, n_gold=n_gold)),
        f"recall_at_{k}": _clean(float(hits / n_gold.sum())),
    }


def evaluate_multilabel(
    gold: Sequence[Sequence[str]],
    scores: np.ndarray,
    codes: Sequence[str],
    thresholds: Thresholds,
    train_freq: Mapping[str, int],
    *,
    ks: Sequence[int] = (5, 8, 15),
) -> dict[str, Any]:
    """Evaluate multi-label test scores in the all-gold and train-seen conventions.

    Args:
        gold: each test document's gold codes (already mapped to the model's
            code system); duplicates within a document count once.
        scores: float ``[n_docs, n_codes]``, the model's test scores.
        codes: the model's label space, one code per column of ``scores``.
        thresholds: tuned on dev; applied to ``scores`` unchanged.
        train_freq: number of train documents per code; codes absent or with 0
            are "unseen in train".
        ks: cut-offs for P@k.

    Returns:
        ``{"all_gold": {...}, "train_seen": {...}, "f1_by_frequency": [...],
        "ks": [...], "thresholds": {...}}`` of plain floats/ints/lists/None.
    """
    scores = np.asarray(scores, dtype=np.float64)
    codes = list(codes)
    if scores.shape != (len(gold), len(codes)):
        raise ValueError(f"scores must have shape (n_docs={len(gold)}, n_codes={len(codes)}), got {scores.shape}")
    if len(set(codes)) != len(codes):
        raise ValueError("codes contains duplicates")
    model_pred = thresholds.apply(scores)

    in_model = set(codes)
    extra_train = sorted(c for c, f in train_freq.items() if f > 0 and c not in in_model)
    gold_codes = {c for doc in gold for c in doc}
    extra_gold = sorted(gold_codes - in_model - set(extra_train))
    space = codes + extra_train + extra_gold
    col = {c: i for i, c in enumerate(space)}
    n_docs, n_model, n_space = len(gold), len(codes), len(space)

    y_all = np.zeros((n_docs, n_space), dtype=bool)
    for i, doc in enumerate(gold):
        y_all[i, [col[c] for c in doc]] = True
    full_scores = np.zeros((n_docs, n_space))
    full_scores[:, :n_model] = scores
    full_pred = np.zeros((n_docs, n_space), dtype=bool)
    full_pred[:, :n_model] = model_pred
    freq = np.array([max(int(train_freq.get(c, 0)), 0) for c in space], dtype=np.int64)
    unseen = freq == 0

    all_gold = _section(y_all, full_scores, full_pred, n_model, unseen, ks, skip_empty=False)
    all_gold["unseen_gold"] = _unseen_gold(y_all, full_scores, n_model, unseen)
    # extra_gold columns are all unseen and never scored: train-seen drops them.
    n_seen_space = n_model + len(extra_train)
    y_seen = y_all[:, :n_seen_space] & ~unseen[:n_seen_space]
    train_seen = _section(
        y_seen,
        full_scores[:, :n_seen_space],
        full_pred[:, :n_seen_space],
        n_model,
        unseen[:n_seen_space],
        ks,
        skip_empty=True,
    )
    bins = m.f1_by_frequency_bins(y_all, full_pred, freq)
    for row in bins:
        row["macro_f1"] = _clean(row["macro_f1"])
    return {
        "all_gold": all_gold,
        "train_seen": train_seen,
        "f1_by_frequency": bins,
        "ks": [int(k) for k in ks],
        "thresholds": thresholds.to_dict(),
    }


def evaluate_multiclass(gold: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro F1 of a single-label task.

    The prediction is the arg-max class (ties: the first class). Gold classes
    the model does not have are extra classes that are never predicted, so
    those documents count as wrong; macro F1 averages over the model's classes
    and those extra ones (a class with no gold and no prediction scores 0).

    Args:
        gold: each test document's gold class.
        probs: float ``[n_docs, n_classes]``.
        classes: the model's classes, one per column of ``probs``.

    Returns:
        ``{"accuracy", "macro_f1", "n_docs", "n_classes", "n_unseen_gold"}``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if probs.shape != (len(gold), len(classes)):
        raise ValueError(f"probs must have shape (n_docs={len(gold)}, n_classes={len(classes)}), got {probs.shape}")
    if not classes:
        raise ValueError("classes is empty: there is nothing to predict")
    space = classes + sorted(set(gold) - set(classes))
    index = {c: i for i, c in enumerate(space)}
    y_true = np.array([index[g] for g in gold], dtype=np.int64)
    y_pred = np.argmax(probs, axis=1)
    return {
        "accuracy": _clean(m.accuracy(y_true, y_pred)),
        "macro_f1": _clean(m.macro_f1_multiclass(y_true, y_pred, len(space))),
        "n_docs": len(gold),
        "n_classes": len(space),
        "n_unseen_gold": int((y_true >= len(classes)).sum()),
    }


def score_notes(
    scores: np.ndarray, notes: Sequence[Note], labels: LabelSpace, thresholds: Thresholds | None
) -> dict[str, Any]:
    """Metrics of ``scores`` ``[n_notes, len(labels)]`` against the notes' gold labels (mapped into ``labels``' system).

    ``thresholds`` None means a single-label task (the decision is the argmax).
    """
    gold = [labels.map_labels(note.labels) for note in notes]
    if thresholds is None:
        return evaluate_multiclass([g[0] if g else "" for g in gold], scores, labels.codes)
    return evaluate_multilabel(gold, scores, labels.codes, thresholds, labels.train_freq)
