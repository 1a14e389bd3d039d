"""A model's test scores turned into the figures METRICS.md defines, and the dev calibration behind them.

- :func:`score_notes` / :func:`grade_notes`: a model's dense scores against labelled notes,
  in the all-gold and train-seen conventions (:func:`evaluate_multilabel`) or, for a
  single-label task, accuracy and macro F1 (:func:`evaluate_multiclass`);
- :func:`calibrate_splits`: a calibrator fitted on dev, applied to dev and test, with ECE@20.

Sparse per-note scores (a system that can rank any catalog code) are reported by
:mod:`medcoder.evaluation.open_set`; both are laid out by :mod:`medcoder.evaluation.figures`
and measured by the same functions there. Label spaces of the dense figures (columns are always laid out model
codes first, so the ranking metrics take the model's block):

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

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.evaluation import metrics as m
from medcoder.evaluation.calibration import Calibrator, calibrate_probabilities, ece_at_k, fit_on_probabilities
from medcoder.evaluation.figures import ScoreLayout, average_precision, dense_layout, precision_at, unseen_gold
from medcoder.evaluation.thresholds import Thresholds

logger = logging.getLogger(__name__)

REPORT_KS = (5, 8, 15)  # the P@k cut-offs of every model's report
ECE_TOP_K = 20  # ECE@20 of METRICS.md: calibration is fitted and measured on each note's 20 top-ranked codes


def _clean(value: float) -> float | None:
    """A plain float, or None for NaN so the dict stays strict JSON."""
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Graded:
    """The figures of test scores and what they were computed from, for reports that draw per code.

    Attributes:
        metrics: what :func:`evaluate_multilabel` or :func:`evaluate_multiclass` returns.
        codes: ``[n_codes]``, the system's codes first, then the codes only train or gold hold.
        gold: bool ``[n_notes, n_codes]``.
        predicted: bool ``[n_notes, n_codes]``, the decisions (dev-tuned thresholds, or the argmax).
        train_freq: int ``[n_codes]``, train documents per code.
        f1_by_frequency: macro F1 per train-frequency bin, None where a bin is empty.
    """

    metrics: dict[str, Any]
    codes: list[str]
    gold: np.ndarray
    predicted: np.ndarray
    train_freq: np.ndarray
    f1_by_frequency: list[dict[str, Any]] = field(default_factory=list)

    def per_code(self) -> list[dict[str, Any]]:
        """One row per code with gold or predictions: ``{"code", "train", "support", "predicted",
        "precision", "recall", "f1"}`` at the decisions."""
        shown = np.flatnonzero(self.gold.any(axis=0) | self.predicted.any(axis=0))
        y, pred = self.gold[:, shown], self.predicted[:, shown]
        precision, recall, f1 = m.per_label_prf(y, pred)
        support, predicted = y.sum(axis=0), pred.sum(axis=0)
        return [
            {
                "code": self.codes[j],
                "train": int(self.train_freq[j]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
            }
            for i, j in enumerate(shown)
        ]


def _frequency_bins(gold: np.ndarray, predicted: np.ndarray, freq: np.ndarray) -> list[dict[str, Any]]:
    bins = m.f1_by_frequency_bins(gold, predicted, freq)
    for row in bins:
        row["macro_f1"] = _clean(row["macro_f1"])
    return bins


def _section(
    layout: ScoreLayout,
    scores: np.ndarray,
    pred: np.ndarray,
    unseen_cols: np.ndarray,
    ks: Sequence[int],
    *,
    skip_empty: bool,
) -> dict[str, Any]:
    """Every headline metric for one label space.

    Args:
        layout: the model's scores and the gold ``[n_docs, n_space]`` of this label space.
        scores: float ``[n_docs, n_space]``; 0 outside the model's columns (what AUC sees).
        pred: bool ``[n_docs, n_space]``; False outside the model's columns.
        unseen_cols: bool ``[n_space]``, columns whose code has train frequency 0.
        ks: cut-offs for P@k.
        skip_empty: leave documents with no gold out of P@k.
    """
    y = layout.gold
    p, r, f1 = m.micro_prf(y, pred)
    has_gold = y.any(axis=1)
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
        out[f"p_at_{k}"] = precision_at(layout, k, has_gold if skip_empty else None)
    out["map"] = average_precision(layout)
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


def _all_gold_layout(
    gold: Sequence[Sequence[str]], scores: np.ndarray, codes: Sequence[str], train_freq: Mapping[str, int]
) -> tuple[ScoreLayout, np.ndarray]:
    """The model's scores over the all-gold label space, and each column's train frequency int ``[n_space]``."""
    scores = np.asarray(scores, dtype=np.float64)
    codes = list(codes)
    if scores.shape != (len(gold), len(codes)):
        raise ValueError(f"scores must have shape (n_docs={len(gold)}, n_codes={len(codes)}), got {scores.shape}")
    if len(set(codes)) != len(codes):
        raise ValueError("codes contains duplicates")
    in_model = set(codes)
    extra_train = sorted(c for c, f in train_freq.items() if f > 0 and c not in in_model)
    extra_gold = sorted({c for doc in gold for c in doc} - in_model - set(extra_train))
    layout = dense_layout(scores, codes, gold, extra_train + extra_gold)
    freq = np.array([max(int(train_freq.get(c, 0)), 0) for c in layout.codes], dtype=np.int64)
    return layout, freq


def _multilabel_figures(
    layout: ScoreLayout, freq: np.ndarray, thresholds: Thresholds, ks: Sequence[int]
) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`evaluate_multilabel`'s dict, and the decisions bool ``[n_docs, n_space]`` it counted."""
    n_docs, n_model, n_space = layout.gold.shape[0], layout.n_ranked, len(layout.codes)
    full_scores = np.zeros((n_docs, n_space))  # 0 outside the model's columns: what AUC sees
    full_scores[:, :n_model] = layout.scores
    full_pred = layout.predicted(thresholds.values())
    unseen = freq == 0
    all_gold = _section(layout, full_scores, full_pred, unseen, ks, skip_empty=False)
    found = unseen_gold(layout, unseen)
    all_gold["unseen_gold"] = {
        "n_docs": found.n_notes,
        "n_gold": found.n_gold,
        "map": _clean(found.map),
        "recall_at_10": _clean(found.recall_at_k),
    }
    # the columns after the train codes hold gold codes only: all unseen, never scored, train-seen drops them
    n_seen = int(n_model + np.count_nonzero(~unseen[n_model:]))
    seen_layout = layout.with_gold(layout.gold[:, :n_seen] & ~unseen[:n_seen], n_seen)
    train_seen = _section(
        seen_layout, full_scores[:, :n_seen], full_pred[:, :n_seen], unseen[:n_seen], ks, skip_empty=True
    )
    metrics = {
        "all_gold": all_gold,
        "train_seen": train_seen,
        "f1_by_frequency": _frequency_bins(layout.gold, full_pred, freq),
        "ks": [int(k) for k in ks],
        "thresholds": thresholds.to_dict(),
    }
    return metrics, full_pred


def evaluate_multilabel(
    gold: Sequence[Sequence[str]],
    scores: np.ndarray,
    codes: Sequence[str],
    thresholds: Thresholds,
    train_freq: Mapping[str, int],
    *,
    ks: Sequence[int] = REPORT_KS,
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
    layout, freq = _all_gold_layout(gold, scores, codes, train_freq)
    return _multilabel_figures(layout, freq, thresholds, ks)[0]


def _argmax_decisions(
    gold: Sequence[str], probs: np.ndarray, classes: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class space: the model's classes, then gold classes it lacks; gold index int ``[n_docs]``; argmax index)."""
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if probs.shape != (len(gold), len(classes)):
        raise ValueError(f"probs must have shape (n_docs={len(gold)}, n_classes={len(classes)}), got {probs.shape}")
    if not classes:
        raise ValueError("classes is empty: there is nothing to predict")
    space = classes + sorted(set(gold) - set(classes))
    index = {c: i for i, c in enumerate(space)}
    return space, np.array([index[g] for g in gold], dtype=np.int64), np.argmax(probs, axis=1)


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
    space, y_true, y_pred = _argmax_decisions(gold, probs, classes)
    return {
        "accuracy": _clean(m.accuracy(y_true, y_pred)),
        "macro_f1": _clean(m.macro_f1_multiclass(y_true, y_pred, len(space))),
        "n_docs": len(gold),
        "n_classes": len(space),
        "n_unseen_gold": int((y_true >= len(classes)).sum()),
    }


def grade_notes(
    scores: np.ndarray,
    notes: Sequence[Note],
    labels: LabelSpace,
    thresholds: Thresholds | None,
    *,
    codes: Sequence[str] | None = None,
) -> Graded:
    """:func:`score_notes` with the gold and the decisions its figures counted.

    ``codes``: the columns of ``scores`` when they are not ``labels.codes`` (a system over other codes).
    """
    gold = [labels.map_labels(note.labels) for note in notes]
    columns = labels.codes if codes is None else list(codes)
    if thresholds is not None:
        layout, freq = _all_gold_layout(gold, scores, columns, labels.train_freq)
        metrics, predicted = _multilabel_figures(layout, freq, thresholds, REPORT_KS)
        return Graded(metrics, layout.codes, layout.gold, predicted, freq, metrics["f1_by_frequency"])
    classes = [g[0] if g else "" for g in gold]
    space, y_true, y_pred = _argmax_decisions(classes, scores, columns)
    rows = np.arange(len(classes))
    one_hot_gold = np.zeros((len(classes), len(space)), dtype=bool)
    one_hot_gold[rows, y_true] = True
    one_hot_pred = np.zeros_like(one_hot_gold)
    one_hot_pred[rows, y_pred] = True
    freq = np.array([max(int(labels.train_freq.get(c, 0)), 0) for c in space], dtype=np.int64)
    metrics = evaluate_multiclass(classes, scores, columns)
    return Graded(metrics, space, one_hot_gold, one_hot_pred, freq, _frequency_bins(one_hot_gold, one_hot_pred, freq))


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


def calibrate_splits(
    method: str, dev_scores: np.ndarray, dev_y: np.ndarray, test_scores: np.ndarray, test_y: np.ndarray, *, seed: int
) -> tuple[Calibrator, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit a calibrator (``method``, or "auto") on dev's top-20 codes per note and apply it to dev and test.

    Args:
        dev_scores, test_scores: the model's probabilities ``[n_notes, n_labels]``.
        dev_y, test_y: bool gold among the model's columns (what ECE@20 looks at).

    Returns:
        ``(calibrator, calibrated dev scores, calibrated test scores, record)``: the scores float32, the
        record ``{"method", "requested", "choice", "k", "dev": {"before", "after"}, "test": {...}}`` with
        :func:`~medcoder.evaluation.calibration.reliability` dicts (a strictly increasing map: rankings,
        hence MAP and P@k, are unchanged).
    """
    calibrator, choice = fit_on_probabilities(dev_scores, dev_y, method, k=ECE_TOP_K, seed=seed)
    dev_calibrated = calibrate_probabilities(calibrator, dev_scores)
    test_calibrated = calibrate_probabilities(calibrator, test_scores)
    record = {
        "method": calibrator.method,
        "requested": method,
        "choice": choice,
        "k": ECE_TOP_K,
        "dev": {
            "before": ece_at_k(dev_scores, dev_y, k=ECE_TOP_K),
            "after": ece_at_k(dev_calibrated, dev_y, k=ECE_TOP_K),
        },
        "test": {
            "before": ece_at_k(test_scores, test_y, k=ECE_TOP_K),
            "after": ece_at_k(test_calibrated, test_y, k=ECE_TOP_K),
        },
    }
    logger.info(
        "calibration: %s (asked %s); test ECE@%d %s -> %s",
        calibrator.method,
        method,
        ECE_TOP_K,
        record["test"]["before"]["ece"],
        record["test"]["after"]["ece"],
    )
    return calibrator, dev_calibrated, test_calibrated, record
