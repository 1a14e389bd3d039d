"""Candidates from the catalog's hierarchy: the codes of the categories a note's signals point at.

A code no training note carried cannot come from the classifiers, and retrieval
finds it only when one mention reads like its description. Most such codes
still belong to a category (ICD-10-CM: the first three characters) that the
training notes do use: the classifiers rank *E11.9* for a note whose gold is
*E11.22*. This source expands the categories of each signal's best codes into
every catalog code under them that the note's models never saw, and ranks those
codes by how much of what sets each apart from its category (the words of its
description and inclusion terms that the category's description lacks: "with
diabetic chronic kidney disease") the note's codable mentions say.

Its rows carry, besides the features every candidate has:

- ``children.rank``: rank among the note's proposed codes (by the score below);
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

from medcoder.rerank.lexical import CodeTexts, stems

CHILDREN = "children"
CHILD_FEATURES = ("rank", "specific_share", "specific_words", "category_rank")
_NAN = float("nan")


class CatalogChildren:
    """Every catalog code of an ICD system grouped by category, and the proposals for one note."""

    def __init__(
        self,
        system: str,
        code_texts: CodeTexts,
        category_of: Callable[[str], str | None],
        *,
        k: int,
        catalog: Sequence[str] | None = None,
    ) -> None:
        if catalog is None:
            from medcoder.data.icd import catalog_entries

            catalog = catalog_entries(system)[0]
        self.system, self.k = system, k
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

    def propose(
        self,
        categories: dict[str, float],
        is_open: Callable[[str], bool],
        said: frozenset[str],
    ) -> dict[str, list[float]]:
        """``{code: [rank, specific share, own words, category rank]}``: the ``k`` best codes under ``categories``.

        ``categories``: each category with the best rank a signal gave one of its
        codes; ``is_open(code)``: whether the note's models never saw the code
        (only those are proposed); ``said``: stems of the note's codable mentions.
        A code ranks by its share of own words said, then by how many it said, then
        by fewer own words (the plainer code), then by its category's rank, then by code.
        """
        scored = []
        for category, category_rank in categories.items():
            for code in self.by_category.get(category, ()):
                if not is_open(code):
                    continue
                texts = [t for t in self.own_words(code, category) if t] or [frozenset()]
                share, matched, words = max(
                    ((len(t & said) / len(t) if t else 0.0), len(t & said), -len(t)) for t in texts
                )
                scored.append((-share, -matched, -words, category_rank, code, share))
        scored.sort()
        return {
            code: [float(rank), share, float(minus_words), float(category_rank)]
            for rank, (_, _, minus_words, category_rank, code, share) in enumerate(scored[: self.k], start=1)
        }
