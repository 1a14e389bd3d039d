"""METRICS.md figures of sparse per-note scores (a system that can rank any catalog code).

The label space is the "all gold" one: train codes ∪ gold codes, plus any code the
system predicted outside both (a false positive everywhere). A gold code a note's
scores do not hold adds 0 to its AP and is a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

from medcoder.retrieval.fusion import open_set_report


def evaluate_scores(
    scores: Sequence[Mapping[str, float]],
    gold: Sequence[Sequence[str]],
    *,
    threshold: float,
    seen: Set[str],
    train_codes: Iterable[str],
    k: int = 8,
) -> dict[str, Any]:
    """``{"all": MAP, micro P/R/F1, macro-F1, P@k, recall@10, "unseen": MAP, recall@10}``.

    P@k is over the notes with a gold code (every CodiEsp note has one).
    """
    report = open_set_report(scores, gold, seen, threshold=threshold)
    gold_sets = [set(g) for g in gold]
    predicted = [{c for c, s in row.items() if s >= threshold} for row in scores]
    # METRICS.md's label space: train codes and gold codes; a predicted code outside both is a false
    # positive in the micro figures only
    space = set(train_codes) | set().union(*gold_sets)
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    for want, got in zip(gold_sets, ({c for c in p if c in space} for p in predicted), strict=True):
        for c in want & got:
            tp[c] = tp.get(c, 0) + 1
        for c in got - want:
            fp[c] = fp.get(c, 0) + 1
        for c in want - got:
            fn[c] = fn.get(c, 0) + 1
    f1 = {c: 2 * tp.get(c, 0) / (2 * tp.get(c, 0) + fp.get(c, 0) + fn.get(c, 0) or 1) for c in space}
    with_gold = [c for c in space if tp.get(c, 0) + fn.get(c, 0) > 0]
    precision_at_k = [
        len({c for c, _ in sorted(row.items(), key=lambda cs: -cs[1])[:k]} & want) / k
        for row, want in zip(scores, gold_sets, strict=True)
        if want
    ]
    report["all"] |= {
        "macro_f1": sum(f1.values()) / len(space) if space else float("nan"),
        "macro_f1_with_gold": sum(f1[c] for c in with_gold) / len(with_gold) if with_gold else float("nan"),
        f"p_at_{k}": sum(precision_at_k) / len(precision_at_k) if precision_at_k else float("nan"),
        "label_space": len(space),
    }
    return report
