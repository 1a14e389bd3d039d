"""Candidates from the catalog's hierarchy: the codes of the categories a note's signals point at.

A code no training note carried cannot come from the classifiers, and retrieval
finds it only when one mention reads like its description. Most such codes
still belong to a category (ICD-10-CM: the first three characters) that the
training notes do use: the classifiers rank *E11.9* for a note whose gold is
*E11.22*. This source expands the categories of each signal's best codes into
every catalog code under them that the note's models never saw, and ranks those
codes by how close the note's codable mentions come to each code's catalog text
(the retrieval encoder's cosine, when the system has retrieval) and by how much
of what sets each apart from its category (the words of its description and
inclusion terms that the category's description lacks: "with diabetic chronic
kidney disease") those mentions say.

Its rows carry, besides the features every candidate has:

- ``children.rank``: rank among the note's proposed codes (by the score below);
- ``children.cosine``: the best cosine of one of the note's codable mentions to the
  code's catalog vector (with retrieval: the same encoder and index);
- ``children.specific_share``: share of the code's own words (those its
  category lacks) in the note's codable mentions, best of its description and
  inclusion terms;
- ``children.specific_words``: how many own words that best text has (0: the
  code adds nothing to its category, e.g. the category itself);
- ``children.category_rank``: the best rank any signal gave a code of the
  category (the category's evidence).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from medcoder.rerank.lexical import CodeTexts, stems
from medcoder.retrieval.index import CodeIndex

CHILDREN = "children"
CHILD_FEATURES = ("rank", "cosine", "specific_share", "specific_words", "category_rank")


class CatalogChildren:
    """Every catalog code of an ICD system grouped by category, and the proposals for one note."""

    def __init__(
        self,
        system: str,
        code_texts: CodeTexts,
        category_of: Callable[[str], str | None],
        *,
        k: int,
        lexical_weight: float = 0.25,
        catalog: Sequence[str] | None = None,
    ) -> None:
        if catalog is None:
            from medcoder.data.icd import catalog_entries

            catalog = catalog_entries(system)[0]
        self.system, self.k, self.lexical_weight = system, k, lexical_weight
        self.index: CodeIndex | None = None
        self._row: dict[str, int] = {}
        self.code_texts = code_texts
        self.codes: list[str] = list(catalog)
        self.by_category: dict[str, list[str]] = {}
        for code in self.codes:
            category = category_of(code)
            if category is not None:
                self.by_category.setdefault(category, []).append(code)

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - one instance per system and process
    def own_words(self, code: str, category: str) -> tuple[frozenset[str], ...]:
        """Stems of the code's description and of each inclusion term, less the category description's stems."""
        from medcoder.data.icd import describe

        parent = stems(describe(category, self.system) or category)
        description, terms = self.code_texts.texts(code)
        return tuple(t - parent for t in (description, *terms))

    def use_index(self, index: CodeIndex) -> None:
        """Score children by the cosine of the note's codable mentions to their catalog vectors too."""
        self.index = index
        self._row = {code: i for i, code in enumerate(index.codes)}

    def propose(
        self,
        categories: dict[str, float],
        is_open: Callable[[str], bool],
        said: frozenset[str],
        vectors: np.ndarray | None = None,
    ) -> dict[str, list[float]]:
        """``{code: [rank, cosine, specific share, own words, category rank]}``: the ``k`` best codes under
        ``categories``.

        ``categories``: each category with the best rank a signal gave one of its
        codes; ``is_open(code)``: whether the note's models never saw the code
        (only those are proposed); ``said``: stems of the note's codable mentions;
        ``vectors``: their unit vectors (with :meth:`use_index`; None: no cosine).
        A code ranks by its best cosine to a mention (0 without vectors) plus
        ``lexical_weight`` times its share of own words said, then by how many of
        them it said, then by fewer own words (the plainer code), then by its
        category's rank, then by code.
        """
        found = [(c, code) for c, rank in categories.items() for code in self.by_category.get(c, ()) if is_open(code)]
        if not found:
            return {}
        cosine = np.full(len(found), np.nan)
        if vectors is not None and self.index is not None and len(vectors):
            rows = [self._row.get(code, -1) for _, code in found]
            known = np.flatnonzero(np.array(rows) >= 0)
            if len(known):
                sims = vectors @ self.index.vectors[[rows[i] for i in known]].T
                cosine[known] = sims.max(axis=0)
        scored = []
        for (category, code), cos in zip(found, cosine.tolist(), strict=True):
            texts = [t for t in self.own_words(code, category) if t] or [frozenset()]
            share, matched, words = max(((len(t & said) / len(t) if t else 0.0), len(t & said), -len(t)) for t in texts)
            score = (0.0 if cos != cos else cos) + self.lexical_weight * share
            scored.append((-score, -matched, -words, categories[category], code, cos, share))
        scored.sort()
        return {
            code: [float(rank), cos, share, float(n_words), float(category_rank)]
            for rank, (_, _, n_words, category_rank, code, cos, share) in enumerate(scored[: self.k], start=1)
        }
