"""Lexical overlap of a note with a code's catalog text: its description and its inclusion terms.

Words are lower-cased, stop words dropped, and cut to their first six letters
(a crude stem: "hypertensive" and "hypertension" meet, "fractures" and
"fracture" too). For a code, the share of its description's stems found in the
note, whether all are, and the same for its best-matching inclusion term
(``simple-icd-10-cm`` lists inclusion terms and "includes" notes for about
6,800 codes; other label systems use the label's own name as its description).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from medcoder.data.icd import inclusion_terms

_WORD = re.compile(r"[^\W_]+")  # letters (accented ones too: "síndrome" is one word) and digits
_STEM = 6
_STOP = frozenset(
    """a an and are as at be by for from has have in into is it its nos not of on or other others specified
    than that the their this to unspecified was were which with without due type""".split()
)


def stems(text: str) -> frozenset[str]:
    """The content-word stems of ``text``."""
    return frozenset(w[:_STEM] for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 1 or w.isdigit()))


@functools.lru_cache(maxsize=200_000)
def _inclusion_terms(code: str, system: str) -> tuple[frozenset[str], ...]:
    return tuple(s for s in (stems(t) for t in inclusion_terms(code, system)) if s)


class CodeTexts:
    """Stems of each code's description and inclusion terms (computed once per code)."""

    def __init__(self, system: str, descriptions: dict[str, str | None]) -> None:
        self.system = system
        self._descriptions = dict(descriptions)
        self._cache: dict[str, tuple[frozenset[str], tuple[frozenset[str], ...]]] = {}

    def texts(self, code: str) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
        """Stems of the code's description and of each of its inclusion terms."""
        found = self._cache.get(code)
        if found is None:
            description = self._descriptions.get(code)
            if description is None and self.system != "none":
                from medcoder.data.icd import describe

                description = describe(code, self.system)
            found = (stems(description or code), _inclusion_terms(code, self.system))
            self._cache[code] = found
        return found

    def features(self, code: str, note: frozenset[str]) -> list[float]:
        """[description share, all of the description, description size, best inclusion share, all of one term]."""
        description, terms = self.texts(code)
        share = len(description & note) / len(description) if description else 0.0
        best_term = max((len(t & note) / len(t) for t in terms), default=float("nan"))
        return [share, float(share == 1.0), float(len(description)), best_term, float(best_term == 1.0)]

    def mention_features(self, code: str, codable: list[frozenset[str]], excluded: list[frozenset[str]]) -> list[float]:
        """[best coverage of the code's description or an inclusion term by one codable mention, by one excluded one].

        "No pleural effusion" covers *Pleural effusion* fully, but as a negated mention.
        """
        description, terms = self.texts(code)
        texts = [t for t in (description, *terms) if t]

        def best(mentions: list[frozenset[str]]) -> float:
            return max((len(t & m) / len(t) for t in texts for m in mentions), default=0.0)

        return [best(codable), best(excluded)]


MENTION_FEATURES = ("codable_share", "excluded_share")
LEXICAL_FEATURES = ("description_share", "description_all", "description_words", "inclusion_share", "inclusion_all")


def note_stems(texts: Iterable[str]) -> list[frozenset[str]]:
    return [stems(t) for t in texts]
