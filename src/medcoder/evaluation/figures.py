"""Scores laid out over one column space, dense or sparse, and the METRICS.md figures computed on it.

A system gives its scores either dense (a model: float ``[notes, codes]`` over its label
space) or sparse (retrieval, fusion, the reranker: per note ``{code: score}`` over any
catalog code). :class:`ScoreLayout` puts either over one compact column space: first the
codes the system ranks (the *ranked block*), then the codes only gold (or a label space)
adds. A sparse layout has a column only for a code some note scored or is coded with, never
one per catalog code (ICD-10-CM has 98k). Every figure is then the same call on a layout,
whichever way the scores came:

- ranking (MAP, P@k, recall@k) over the ranked block: a cell the note did not score sits
  below every score and is never a hit, and MAP divides by the note's full gold count, so a
  gold code the note cannot rank adds 0;
- decisions (micro / macro P/R/F1): ``score >= threshold`` among the cells the note scored;
- unseen gold (:func:`unseen_gold`): each note's seen gold codes leave its ranking.

The open-set reports (:mod:`medcoder.evaluation.scoring`) keep three conventions of their
own so that the figures of saved systems stay the same to the bit: micro F1 is the harmonic
mean of P and R and recall is NaN without gold (:func:`pooled_prf`); P@k breaks ties as the
system listed its codes (:attr:`ScoreLayout.listing`), MAP and recall@k by code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from medcoder.evaluation import metrics as m


@dataclass(frozen=True)
class ScoreLayout:
    """Notes' scores and gold codes over one column space (see the module docstring).

    Attributes:
        codes: ``[n_codes]``, the ranked block first (``scores.shape[1]`` codes).
        scores: float64 ``[n_notes, n_ranked]``; a cell its note did not score holds ``floor``.
        gold: bool ``[n_notes, n_codes]``; every gold code of every note has a column.
        floor: a value below every score.
        scored: bool ``[n_notes, n_ranked]``, the cells each note scored; None: all of them.
        listing: int ``[n_notes, n_ranked]``, each scored code's place in its note's listing
            (the order among equal scores of :func:`precision_at`); None: by column.
    """

    codes: list[str]
    scores: np.ndarray
    gold: np.ndarray
    floor: float
    scored: np.ndarray | None = None
    listing: np.ndarray | None = None

    @property
    def n_ranked(self) -> int:
        return int(self.scores.shape[1])

    def hits(self) -> np.ndarray:
        """bool ``[n_notes, n_ranked]``: gold codes among the cells each note ranks."""
        gold = self.gold[:, : self.n_ranked]
        return gold if self.scored is None else gold & self.scored

    def n_gold(self) -> np.ndarray:
        """int ``[n_notes]``: each note's number of gold codes, rankable or not."""
        return self.gold.sum(axis=1)

    def predicted(self, thresholds: float | np.ndarray) -> np.ndarray:
        """bool ``[n_notes, n_codes]``: ``score >= threshold`` among the scored cells, False outside the block.

        ``thresholds``: a scalar or float ``[n_ranked]`` (one per ranked column).
        """
        block = self.scores >= np.asarray(thresholds, dtype=np.float64)
        out = np.zeros(self.gold.shape, dtype=bool)
        out[:, : self.n_ranked] = block if self.scored is None else block & self.scored
        return out

    def with_gold(self, gold: np.ndarray, n_codes: int | None = None) -> ScoreLayout:
        """The same scores with other gold ``bool [n_notes, n_codes]`` over the first ``n_codes`` columns."""
        n = self.gold.shape[1] if n_codes is None else n_codes
        return replace(self, codes=self.codes[:n], gold=np.asarray(gold, dtype=bool)[:, :n])


def _gold_matrix(gold: Sequence[Iterable[str]], column: Mapping[str, int], n_codes: int) -> np.ndarray:
    y = np.zeros((len(gold), n_codes), dtype=bool)
    for i, codes in enumerate(gold):
        y[i, [column[c] for c in codes]] = True
    return y


def dense_layout(
    scores: np.ndarray, codes: Sequence[str], gold: Sequence[Iterable[str]], extra_codes: Sequence[str] = ()
) -> ScoreLayout:
    """A model's scores float ``[n_notes, len(codes)]``, every cell scored; ``extra_codes`` (not in ``codes``,
    holding every gold code outside them) follow the block unscored."""
    s = np.asarray(scores, dtype=np.float64)
    space = [*codes, *extra_codes]
    column = {c: i for i, c in enumerate(space)}
    floor = float(s.min(initial=0.0)) - 1.0
    return ScoreLayout(space, s, _gold_matrix(gold, column, len(space)), floor)


def sparse_layout(
    scores: Sequence[Mapping[str, float]],
    gold: Sequence[Iterable[str]],
    extra_codes: Iterable[str] = (),
    *,
    listing: bool = False,
) -> ScoreLayout:
    """Per-note ``{code: score}`` rows over the codes any note scored (sorted), then the gold and
    ``extra_codes`` no note scored (sorted); ``listing`` also records each code's place in its row."""
    ranked = sorted({code for row in scores for code in row})
    others = sorted(({c for codes in gold for c in codes} | set(extra_codes)) - set(ranked))
    space = ranked + others
    column = {c: i for i, c in enumerate(space)}
    rows = [i for i, row in enumerate(scores) for _ in row]
    cols = [column[code] for row in scores for code in row]
    values = np.array([s for row in scores for s in row.values()], dtype=np.float64)
    # an empty cell sits below any real score (a ranker's raw scores can be any real number)
    floor = float(values.min()) - 1.0 if values.size else -1.0
    matrix = np.full((len(scores), len(ranked)), floor, dtype=np.float64)
    matrix[rows, cols] = values
    scored = np.zeros(matrix.shape, dtype=bool)
    scored[rows, cols] = True
    places = None
    if listing:
        places = np.full(matrix.shape, len(ranked), dtype=np.int64)
        places[rows, cols] = [place for row in scores for place in range(len(row))]
    return ScoreLayout(space, matrix, _gold_matrix(gold, column, len(space)), floor, scored, places)


def average_precision(layout: ScoreLayout, rows: np.ndarray | None = None) -> float:
    """MAP over the notes ``rows`` (bool ``[n_notes]``, default all) with a gold code; NaN without one."""
    hits, scores, n_gold = layout.hits(), layout.scores, layout.n_gold()
    if rows is not None:
        hits, scores, n_gold = hits[rows], scores[rows], n_gold[rows]
    return m.mean_average_precision(hits, scores, n_gold=n_gold)


def recall_at(layout: ScoreLayout, k: int, rows: np.ndarray | None = None) -> float:
    """Recall@k pooled over the notes ``rows`` (default all): gold codes in their top ``k`` over all their gold."""
    hits, scores, n_gold = layout.hits(), layout.scores, layout.n_gold()
    if rows is not None:
        hits, scores, n_gold = hits[rows], scores[rows], n_gold[rows]
    return m.recall_at_k(hits, scores, k, n_gold=n_gold)


def precision_at(layout: ScoreLayout, k: int, rows: np.ndarray | None = None) -> float:
    """P@k over the notes ``rows`` (default all); ties as listed where the layout has a listing."""
    hits, scores, listing = layout.hits(), layout.scores, layout.listing
    if rows is not None:
        hits, scores = hits[rows], scores[rows]
        listing = None if listing is None else listing[rows]
    return m.precision_at_k(hits, scores, k, tie_order=listing)


def pooled_prf(tp: int, n_predicted: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall (NaN without gold) and F1 as the harmonic mean of the two, from pooled counts.

    The open-set figures' formula: :func:`~medcoder.evaluation.metrics.micro_prf`'s
    ``2TP / (2TP + FP + FN)`` is the same number up to rounding, and 0 recall without gold.
    """
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / n_gold if n_gold else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass(frozen=True)
class UnseenGold:
    """Ranking figures of the gold codes no train note carries (METRICS.md, "unseen gold")."""

    n_notes: int  # notes with an unseen gold code
    n_gold: int  # their unseen gold assignments
    map: float  # NaN without such a note
    recall_at_k: float


def unseen_gold(layout: ScoreLayout, unseen: np.ndarray, *, k: int = 10) -> UnseenGold:
    """MAP and recall@k of the gold codes in the columns ``unseen`` (bool ``[n_codes]``).

    Each note's seen gold codes leave its ranking (so an unseen gold code competes only
    with wrong codes), ranked columns no note still ranks leave with them, and notes
    without an unseen gold code drop out; unseen gold codes outside the ranked block are
    misses (they add 0 to AP and to recall).
    """
    unseen = np.asarray(unseen, dtype=bool)
    gold = layout.gold & unseen
    n_gold = gold.sum(axis=1)
    rows = n_gold > 0
    if not rows.any():
        return UnseenGold(0, 0, float("nan"), float("nan"))
    n = layout.n_ranked
    ranking = ~(layout.gold[:, :n] & ~unseen[:n])
    if layout.scored is not None:
        ranking &= layout.scored
    kept = ranking.any(axis=0)
    hits = (gold[:, :n] & ranking)[rows][:, kept]
    scores = np.where(ranking, layout.scores, layout.floor)[rows][:, kept]
    return UnseenGold(
        int(rows.sum()),
        int(n_gold.sum()),
        m.mean_average_precision(hits, scores, n_gold=n_gold[rows]),
        m.recall_at_k(hits, scores, k, n_gold=n_gold[rows]),
    )
