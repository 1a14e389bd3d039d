"""Candidates per note and the features of every (note, code) pair.

Candidates: each base classifier's top-k codes and retrieval's top-k codes (by
their best codable mention), united. Built once at the largest k; every row
keeps its rank in each source's list, so :meth:`Candidates.subset` gives the
candidates of a smaller k, or of the system without one signal, without
recomputing anything.

Features, grouped by signal (a group's features share the prefix ``group.``):

- ``<base>.``: the base's score, its rank in the note, score / the note's best score
  (missing for a code outside the base's label space: a code unseen in training);
- ``children.``: for a code the catalog's hierarchy proposed (:mod:`medcoder.rerank.children`),
  its rank, how much of what sets it apart from its category the note says, and its
  category's rank;
- ``retrieval.``: best and mean cosine of the codable mentions that retrieved the
  code, how many did, how many negated / hypothetical / family-history mentions
  did and their share, their best cosine, the code's rank by best cosine;
- ``frequency.``: log(1 + train documents with the code), whether it was unseen;
- ``hierarchy.``: depth of the code, whether it is a category, how many other
  candidates share its category, and per signal the best score in its category
  and chapter (so a leaf inherits evidence for its parent);
- ``lexical.``: overlap of the note with the code's description and inclusion terms;
- ``mentions.``: how much of the code's description (or an inclusion term) one
  mention of the note covers, for codable mentions and for negated / hypothetical /
  family-history ones ("no pleural effusion" is evidence against *Pleural effusion*).

On train, scores are out-of-fold and the frequency is the one the note's
out-of-fold model saw (a code absent from the other folds was unseen for it),
so train rows look like the rows of a new note.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medcoder.config.rerank import RerankConfig
from medcoder.rerank.children import CHILD_FEATURES, CHILDREN, CatalogChildren
from medcoder.rerank.lexical import LEXICAL_FEATURES, MENTION_FEATURES, CodeTexts
from medcoder.rerank.signals import NoteEvidence, NoteMentions
from medcoder.retrieval.index import CodeIndex

RETRIEVAL = "retrieval"
_NAN = float("nan")


@dataclass
class SplitSignals:
    """Everything known about the notes of one split before ranking."""

    stems: list[frozenset[str]]  # content-word stems of each note
    scores: dict[str, np.ndarray]  # base name -> float32 [n_notes, n_labels]
    freq: np.ndarray  # int [n_notes, n_labels]: train frequency of each label as the note's models saw it
    retrieval: list[NoteEvidence] | None = None
    gold: list[list[str]] | None = None  # label-space spelling, unseen codes included
    mentions: list[NoteMentions] | None = None  # stems of each note's codable and excluded mentions
    mention_vectors: list[np.ndarray] | None = None  # unit vectors of each note's codable mentions (retrieval's)
    # out-of-fold frequencies count (K-1)/K of train: K/(K-1) puts them on the scale of the full train counts
    freq_scale: float = 1.0

    def __len__(self) -> int:
        return len(self.stems)


@dataclass
class Candidates:
    """Rows = (note, code) pairs, grouped by note in order."""

    note: np.ndarray  # int [rows]: the note of each row
    codes: list[str]
    x: np.ndarray  # float32 [rows, features]
    source_rank: np.ndarray  # float [rows, sources]: rank in each source's list (inf: not in it)
    n_notes: int
    y: np.ndarray | None = None  # bool [rows]
    unseen: np.ndarray | None = None  # bool [rows]: a code the note's models never saw in training
    n_gold: np.ndarray | None = None  # int [notes]: all gold codes of each note (also those no row holds)
    names: list[str] = field(default_factory=list)

    def subset(self, k: int, sources: Sequence[int], columns: Sequence[int]) -> Candidates:
        """Rows some source in ``sources`` ranks in its top ``k``, features ``columns`` only."""
        keep = (self.source_rank[:, list(sources)] <= k).any(axis=1)
        return Candidates(
            note=self.note[keep],
            codes=[c for c, kept in zip(self.codes, keep, strict=True) if kept],
            x=self.x[np.ix_(keep, list(columns))],
            source_rank=self.source_rank[keep][:, list(sources)],
            n_notes=self.n_notes,
            y=None if self.y is None else self.y[keep],
            unseen=None if self.unseen is None else self.unseen[keep],
            n_gold=self.n_gold,
            names=[self.names[c] for c in columns],
        )

    def group_sizes(self) -> np.ndarray:
        """Rows per note (notes without a candidate count 0)."""
        return np.bincount(self.note, minlength=self.n_notes)

    def per_note(self, values: np.ndarray) -> list[dict[str, float]]:
        """``{code: value}`` per note from one value per row."""
        out: list[dict[str, float]] = [{} for _ in range(self.n_notes)]
        for i, code, v in zip(self.note.tolist(), self.codes, np.asarray(values).tolist(), strict=True):
            out[i][code] = float(v)
        return out


def _ranks(row: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based rank of each valid column by score (nan where not valid)."""
    rank = np.full(row.shape, np.nan)
    columns = np.flatnonzero(valid)
    order = columns[np.argsort(-row[columns], kind="stable")]
    rank[order] = np.arange(1, len(order) + 1)
    return rank


class FeatureBuilder:
    """Turns :class:`SplitSignals` into :class:`Candidates` for a fixed label space and set of signals."""

    def __init__(
        self,
        codes: Sequence[str],
        system: str,
        bases: Sequence[str],
        *,
        retrieval: bool,
        groups: Sequence[str],
        code_texts: CodeTexts,
        children: CatalogChildren | None = None,
        category_depth: int = 20,
    ) -> None:
        self.codes = list(codes)
        self.column = {c: j for j, c in enumerate(self.codes)}
        self.system = system
        self.bases = list(bases)
        self.retrieval = retrieval
        self.groups = set(groups)
        self.code_texts = code_texts
        self.children, self.category_depth = children, category_depth
        # the signals whose scores describe every candidate; the catalog's children are a source of candidates only
        self.signals = [*self.bases, *([RETRIEVAL] if retrieval else [])]
        self.sources = [*self.signals, *([CHILDREN] if children is not None else [])]
        self._ancestors: dict[str, dict[str, str | None]] = {"category": {}, "chapter": {}}
        categories = [self.category(c) for c in self.codes]
        chapters = [self.chapter(c) for c in self.codes]
        self._cat_names = sorted({c for c in categories if c is not None})
        self._chap_names = sorted({c for c in chapters if c is not None})
        cat_pos = {c: i for i, c in enumerate(self._cat_names)}
        chap_pos = {c: i for i, c in enumerate(self._chap_names)}
        self._cat_of = np.array([cat_pos[c] if c else -1 for c in categories], dtype=np.int64)
        self._chap_of = np.array([chap_pos[c] if c else -1 for c in chapters], dtype=np.int64)
        self._cat_pos, self._chap_pos = cat_pos, chap_pos
        self._has_cat = self._cat_of >= 0
        self.names = self._names()

    @classmethod
    def for_config(
        cls,
        config: RerankConfig,
        codes: Sequence[str],
        system: str,
        descriptions: Sequence[str | None],
        index: CodeIndex | None = None,
    ) -> FeatureBuilder:
        """The builder of a rerank config's signals and features over the label space ``codes``
        (``index``: retrieval's catalog index, which scores the catalog's children too)."""
        code_texts = CodeTexts(system, dict(zip(codes, descriptions, strict=True)))
        children = None
        if config.children is not None:
            from medcoder.data.icd import code_at_level

            category_of = functools.partial(code_at_level, system=system, level="category")
            settings = config.children
            children = CatalogChildren(
                system, code_texts, category_of, k=settings.k, lexical_weight=settings.lexical_weight
            )
            if index is not None:
                children.use_index(index)
        return cls(
            codes,
            system,
            [b.name for b in config.bases],
            retrieval=config.retrieval is not None,
            groups=config.features,
            code_texts=code_texts,
            children=children,
            category_depth=config.children.categories if config.children is not None else 0,
        )

    # ------------------------------------------------------------ hierarchy
    def category(self, code: str) -> str | None:
        return self._ancestor(code, "category")

    def chapter(self, code: str) -> str | None:
        return self._ancestor(code, "chapter")

    def _ancestor(self, code: str, level: str) -> str | None:
        """``code``'s ancestor at ``level`` (None without a code system), looked up once per code."""
        if self.system == "none":
            return None
        known = self._ancestors[level]
        if code not in known:
            from medcoder.data.icd import code_at_level

            known[code] = code_at_level(code, self.system, level)
        return known[code]

    def _names(self) -> list[str]:
        names = []
        for base in self.bases:
            names += [f"{base}.score", f"{base}.rank", f"{base}.relative"]
        if self.retrieval:
            names += [
                f"{RETRIEVAL}.best",
                f"{RETRIEVAL}.mean",
                f"{RETRIEVAL}.mentions",
                f"{RETRIEVAL}.excluded_mentions",
                f"{RETRIEVAL}.excluded_share",
                f"{RETRIEVAL}.best_excluded",
                f"{RETRIEVAL}.rank",
                f"{RETRIEVAL}.relative",
                f"{RETRIEVAL}.rank_among_unseen",
            ]
        if self.children is not None:
            names += [f"{CHILDREN}.{n}" for n in CHILD_FEATURES]
        if "frequency" in self.groups:
            names += ["frequency.log", "frequency.unseen"]
        if "hierarchy" in self.groups:
            names += [
                "hierarchy.depth",
                "hierarchy.is_category",
                "hierarchy.sibling_candidates",
                "hierarchy.category_frequency",
            ]
            for source in self.signals:
                names += [f"hierarchy.{source}.category", f"hierarchy.{source}.chapter"]
        if "lexical" in self.groups:
            names += [f"lexical.{n}" for n in LEXICAL_FEATURES]
        if "mentions" in self.groups:
            names += [f"mentions.{n}" for n in MENTION_FEATURES]
        return names

    def group_of(self, name: str) -> str:
        """The signal a feature belongs to (``hierarchy.tfidf.category`` belongs to ``tfidf`` and ``hierarchy``)."""
        return name.split(".")[0]

    def columns_without(self, dropped: str | None) -> list[int]:
        """Feature columns left when the signal or feature group ``dropped`` is removed."""
        if dropped is None:
            return list(range(len(self.names)))

        def belongs(name: str) -> bool:
            parts = name.split(".")
            return parts[0] == dropped or (parts[0] == "hierarchy" and len(parts) > 2 and parts[1] == dropped)

        return [i for i, n in enumerate(self.names) if not belongs(n)]

    # ------------------------------------------------------------ building
    def build(self, signals: SplitSignals, k: int) -> Candidates:
        """Candidates of every note (each source's top ``k``) with their features."""
        n_notes = len(signals)
        rows_note: list[int] = []
        rows_code: list[str] = []
        rows_x: list[list[float]] = []
        rows_rank: list[list[float]] = []
        rows_y: list[bool] = []
        rows_unseen: list[bool] = []
        n_gold = np.zeros(n_notes, dtype=np.int64)
        for i in range(n_notes):
            valid = signals.freq[i] > 0
            per_base = {}
            for base in self.bases:
                row = signals.scores[base][i].astype(np.float64)
                if not np.isfinite(row).all():
                    raise ValueError(f"base {base!r} gave a score that is not a finite number (note {i})")
                rank = _ranks(row, valid)
                best = row[valid].max() if valid.any() else _NAN
                per_base[base] = (row, rank, best, self._group_max(row, valid, self._cat_of, len(self._cat_names)))
                per_base[base] += (self._group_max(row, valid, self._chap_of, len(self._chap_names)),)
            evidence = signals.retrieval[i] if self.retrieval and signals.retrieval is not None else {}
            retrieved = sorted(
                ((ev.best, code) for code, ev in evidence.items() if ev.n_codable > 0), key=lambda t: (-t[0], t[1])
            )
            retrieval_rank = {code: r for r, (_, code) in enumerate(retrieved, start=1)}
            best_cosine = retrieved[0][0] if retrieved else _NAN
            unseen_rank = {
                code: r
                for r, (_, code) in enumerate(
                    ((b, c) for b, c in retrieved if c not in self.column or not valid[self.column[c]]), start=1
                )
            }
            category_freq: dict[str, float] = {}
            if "hierarchy" in self.groups:
                counts = np.bincount(
                    self._cat_of[self._has_cat],
                    weights=signals.freq[i][self._has_cat],
                    minlength=len(self._cat_names),
                )
                category_freq = dict(zip(self._cat_names, counts.tolist(), strict=True))
            # candidates and each source's rank
            ranks: dict[str, list[float]] = {}
            for s, base in enumerate(self.bases):
                rank = per_base[base][1]
                for j in np.flatnonzero(rank <= k):
                    ranks.setdefault(self.codes[j], [math.inf] * len(self.sources))[s] = float(rank[j])
            if self.retrieval:
                at = self.sources.index(RETRIEVAL)
                for code, r in retrieval_rank.items():
                    if r <= k:
                        ranks.setdefault(code, [math.inf] * len(self.sources))[at] = float(r)
            proposed: dict[str, list[float]] = {}
            if self.children is not None:
                proposed = self._children_of(signals, i, per_base, retrieval_rank, valid)
                for code, values in proposed.items():
                    if values[0] <= k:
                        ranks.setdefault(code, [math.inf] * len(self.sources))[-1] = values[0]
            cat_max_retrieval: dict[str, float] = {}
            chap_max_retrieval: dict[str, float] = {}
            if self.retrieval and "hierarchy" in self.groups:
                for code, ev in evidence.items():
                    if ev.n_codable:
                        for key, table in (
                            (self.category(code), cat_max_retrieval),
                            (self.chapter(code), chap_max_retrieval),
                        ):
                            if key is not None and ev.best > table.get(key, -math.inf):
                                table[key] = ev.best
            siblings: dict[str | None, int] = {}
            for code in ranks:
                siblings[self.category(code)] = siblings.get(self.category(code), 0) + 1
            gold = set(signals.gold[i]) if signals.gold is not None else set()
            n_gold[i] = len(gold)
            for code in sorted(ranks):
                j = self.column.get(code)
                x: list[float] = []
                for base in self.bases:
                    row, rank, best, _, _ = per_base[base]
                    if j is not None and valid[j]:
                        x += [row[j], rank[j], row[j] / best if best > 0 else _NAN]
                    else:
                        x += [_NAN, _NAN, _NAN]
                if self.retrieval:
                    ev = evidence.get(code)
                    if ev is None:
                        x += [_NAN, _NAN, 0.0, 0.0, _NAN, _NAN, _NAN, _NAN, _NAN]
                    else:
                        total = ev.n_codable + ev.n_excluded
                        x += [
                            ev.best,
                            ev.mean,
                            float(ev.n_codable),
                            float(ev.n_excluded),
                            ev.n_excluded / total if total else _NAN,
                            ev.best_excluded,
                            float(retrieval_rank.get(code, _NAN)),
                            ev.best / best_cosine if best_cosine > 0 else _NAN,
                            float(unseen_rank.get(code, _NAN)),
                        ]
                if self.children is not None:
                    x += proposed.get(code, [_NAN] * len(CHILD_FEATURES))
                if "frequency" in self.groups:
                    freq = float(signals.freq[i, j]) if j is not None else 0.0
                    x += [math.log1p(freq * signals.freq_scale), float(freq == 0)]
                if "hierarchy" in self.groups:
                    category, chapter = self.category(code), self.chapter(code)
                    x += [
                        float(len(code.replace(".", ""))),
                        float("." not in code),
                        float(siblings.get(category, 1) - 1) if category is not None else _NAN,
                        math.log1p(category_freq.get(category, 0.0) * signals.freq_scale)
                        if category is not None
                        else _NAN,
                    ]
                    for base in self.bases:
                        cat_max, chap_max = per_base[base][3], per_base[base][4]
                        ci, hi = self._cat_pos.get(category), self._chap_pos.get(chapter)
                        x += [cat_max[ci] if ci is not None else _NAN, chap_max[hi] if hi is not None else _NAN]
                    if self.retrieval:
                        x += [cat_max_retrieval.get(category, _NAN), chap_max_retrieval.get(chapter, _NAN)]
                if "lexical" in self.groups:
                    x += self.code_texts.features(code, signals.stems[i])
                if "mentions" in self.groups:
                    if signals.mentions is None:
                        raise ValueError("the 'mentions' features need each note's mentions")
                    x += self.code_texts.mention_features(code, *signals.mentions[i])
                rows_note.append(i)
                rows_code.append(code)
                rows_x.append(x)
                rows_rank.append(ranks[code])
                rows_y.append(code in gold)
                rows_unseen.append(j is None or not valid[j])
        width = len(self.names)
        return Candidates(
            note=np.array(rows_note, dtype=np.int64),
            codes=rows_code,
            x=np.array(rows_x, dtype=np.float32).reshape(-1, width),
            source_rank=np.array(rows_rank, dtype=np.float64).reshape(-1, len(self.sources)),
            n_notes=n_notes,
            y=np.array(rows_y, dtype=bool) if signals.gold is not None else None,
            unseen=np.array(rows_unseen, dtype=bool),
            n_gold=n_gold if signals.gold is not None else None,
            names=list(self.names),
        )

    def _children_of(
        self,
        signals: SplitSignals,
        i: int,
        per_base: dict[str, tuple],
        retrieval_rank: dict[str, int],
        valid: np.ndarray,
    ) -> dict[str, list[float]]:
        """The catalog children proposed for note ``i``: under the categories of each signal's best codes."""
        assert self.children is not None
        depth = self.category_depth
        categories: dict[str, float] = {}
        pointed = [(self.codes[j], rank[j]) for _, rank, *_ in per_base.values() for j in np.flatnonzero(rank <= depth)]
        pointed += [(code, float(r)) for code, r in retrieval_rank.items() if r <= depth]
        for code, rank in pointed:
            category = self.category(code)
            if category is not None and rank < categories.get(category, math.inf):
                categories[category] = float(rank)
        if signals.mentions is not None:
            said = frozenset().union(*signals.mentions[i][0])
        else:
            said = signals.stems[i]

        def is_open(code: str) -> bool:
            j = self.column.get(code)
            return j is None or not valid[j]

        vectors = signals.mention_vectors[i] if signals.mention_vectors is not None else None
        return self.children.propose(categories, is_open, said, vectors)

    @staticmethod
    def _group_max(row: np.ndarray, valid: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
        """Best valid score per group (category / chapter); nan for a group without one."""
        out = np.full(n_groups, -np.inf)
        keep = valid & (group_of >= 0)
        np.maximum.at(out, group_of[keep], row[keep])
        out[np.isinf(out)] = np.nan
        return out


def unseen_reach(
    candidates: Candidates,
    sources: Sequence[str],
    scores: Sequence[dict[str, float]],
    gold: Sequence[Sequence[str]],
    seen: set[str],
) -> dict[str, object]:
    """Where the gold codes no training note carried come from and where they land.

    Per source, how many such gold assignments it brings among the candidates (and
    any source at all); of those, how many the final ranking ``scores`` puts in each
    note's top 10 / 20 / 50.
    """
    total = sum(1 for note in gold for code in note if code not in seen)
    wanted = {(i, code) for i, note in enumerate(gold) for code in note if code not in seen}
    per_source = dict.fromkeys(sources, 0)
    reached = set()
    for row, (i, code) in enumerate(zip(candidates.note.tolist(), candidates.codes, strict=True)):
        if (i, code) not in wanted:
            continue
        reached.add((i, code))
        for s, name in enumerate(sources):
            if candidates.source_rank[row, s] < math.inf:
                per_source[name] += 1
    landed = {10: 0, 20: 0, 50: 0}
    for i, code in reached:
        ranked = sorted(scores[i].items(), key=lambda kv: (-kv[1], kv[0]))
        position = next(r for r, (c, _) in enumerate(ranked, start=1) if c == code)
        for top in landed:
            landed[top] += position <= top
    return {
        "gold_assignments": total,
        "per_source": per_source,
        "any_source": len(reached),
        "final_top": {str(top): n for top, n in landed.items()},
    }
