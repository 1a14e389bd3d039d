"""Mention extraction: the clinical phrases of a note, and which of them must not be coded.

No pretrained clinical NER pipeline installs offline (spaCy's and scispaCy's models
are downloaded from GitHub/S3, not the package registry), so the pieces are:

- **spaCy** (``spacy.blank("en")`` + ``sentencizer``): tokens and sentences.
- **Candidate phrases**: each sentence is cut at punctuation, at function words
  (spaCy's English stop list, minus the connectors that hold clinical phrases
  together: "of", "with", "in", ...) and at context triggers; a phrase is kept when
  it holds at least one word of the ICD catalog's descriptions (so "chest pain"
  stays and "the patient was seen" goes). These cut rules are ours: the last resort
  the issue allows, kept small.
- **negspacy** (NegEx, Chapman et al. 2001) marks each phrase three times with
  three trigger sets: negated (its clinical English termset plus a few "ruled out"
  forms), hypothetical ("if", "return precautions", "warning signs of", ...) and
  family history ("mother", "family history of", ...). A phrase under a
  ``FAMILY HISTORY:`` section header is family history too.

:meth:`MentionExtractor.extract` returns every candidate with its reason for
exclusion (``None`` when it should be coded); :meth:`MentionExtractor.codable`
only the ones to code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from medcoder.errors import MedcoderError

EXCLUSION_REASONS = ("negated", "hypothetical", "family_history")

# Connectors that occur inside clinical phrases ("shortness of breath", "diabetes with
# hyperglycemia"): spaCy counts them as stop words, we do not cut there.
_CONNECTORS = frozenset({"of", "with", "in", "to", "on", "due", "without", "at", "by", "from"})
_EXTRA_BREAKS = frozenset(
    {
        "patient",
        "patients",
        "showed",
        "revealed",
        "presented",
        "presents",
        "reported",
        "reports",
        "found",
        "diagnosed",
        "admitted",
        "observed",
        "noted",
        "performed",
        "underwent",
        "treated",
        "started",
        "included",
        "including",
        "year",
        "years",
        "old",
        "day",
        "days",
        "month",
        "months",
        "week",
        "weeks",
        "hours",
        "time",
        "case",
        "evolution",
        "study",
        "history",
        "mg",
        "ml",
        "dl",
        "cm",
        "mm",
        "kg",
        "man",
        "woman",
        "boy",
        "girl",
        "child",
        "compatible",
        "consistent",
        "suggestive",
        "suggesting",
        "showing",
        "return",
        "present",
        "absent",
        "normal",
        "positive",
        "admission",
        "onset",
        "condition",
        "requested",
        "results",
    }
)

HYPOTHETICAL_TRIGGERS: dict[str, list[str]] = {
    "pseudo_negations": ["if needed", "if necessary", "as needed"],
    "preceding_negations": [
        "if",
        "in case of",
        "should",
        "would",
        "could",
        "risk of",
        "at risk for",
        "warning signs of",
        "signs and symptoms of",
        "return precautions",
        "precautions",
        "to prevent",
        "prevention of",
        "prophylaxis of",
        "prophylaxis against",
        "screening for",
        "rule out",
        "r/o",
        "to exclude",
        "evaluate for",
        "watch for",
        "monitor for",
        "seek care",
    ],
    "following_negations": ["develops", "develop", "occurs", "occur", "arises", "is suspected"],
    "termination": ["but", "however", "although", "though", "yet", "because", "since"],
}
FAMILY_TRIGGERS: dict[str, list[str]] = {
    "pseudo_negations": ["no family history", "family history of unknown"],
    "preceding_negations": [
        "family history of",
        "family history",
        "familial history of",
        "fh of",
        "mother",
        "father",
        "sister",
        "brother",
        "son",
        "daughter",
        "grandmother",
        "grandfather",
        "aunt",
        "uncle",
        "cousin",
        "parents",
        "parent",
        "sibling",
        "siblings",
        "relative",
        "relatives",
        "maternal",
        "paternal",
    ],
    "following_negations": ["in the family", "in his family", "in her family", "runs in the family"],
    "termination": ["but", "however", "although", "patient", "he", "she", "himself", "herself"],
}
_EXTRA_NEGATIONS = {
    "preceding_negations": [
        "no known",
        "no prior",
        "no history of",
        "not suggestive of",
        "no clinical signs of",
        "excluded",
        "no evidence of",
    ],
    "following_negations": [
        "has been ruled out",
        "had been ruled out",
        "ruled out",
        "was excluded",
        "were excluded",
        "excluded",
        "was negative",
        "were negative",
        "negative",
    ],
}
_CLINICAL_SUFFIXES = (
    "emia",
    "itis",
    "osis",
    "oma",
    "pathy",
    "ectomy",
    "otomy",
    "ostomy",
    "plasty",
    "algia",
    "uria",
    "penia",
    "plegia",
    "thyroid",
    "trophy",
    "megaly",
    "lipidemia",
    "esis",
    "iasis",
)
_SECTION = re.compile(r"^\s*([A-Za-z][A-Za-z /&-]{2,40}):", re.MULTILINE)
_FAMILY_SECTION = re.compile(r"family", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    """A candidate clinical phrase: ``text`` = ``note[start:end]``; ``excluded``: why it must not be coded."""

    text: str
    start: int
    end: int
    sentence: str
    excluded: str | None = None


def mention_catalog(system: str) -> str:
    """The catalog whose words (with ICD-10-CM's) make a phrase clinical for labels of ``system``."""
    from medcoder.data.icd import CATALOG_SYSTEMS

    return system if system in CATALOG_SYSTEMS else "icd10cm"


@lru_cache(maxsize=4)
def _catalog_words(system: str = "icd10cm") -> frozenset[str]:
    """Words of ICD-10-CM's descriptions, and of ``system``'s too (ICD-10-PCS: "tomography", "resection")."""
    from medcoder.data.icd import catalog_entries

    words: set[str] = set()
    for catalog in dict.fromkeys(["icd10cm", system]):
        for description in catalog_entries(catalog)[1]:
            words.update(re.findall(r"[a-z]{3,}", description.lower()))
    return frozenset(words)


class MentionExtractor:
    """Candidate clinical phrases of a note with negated / hypothetical / family-history ones marked.

    ``vocabulary``: words a phrase must contain one of to count as clinical (default:
    every word of ICD-10-CM's descriptions, and of ``catalog``'s when it names another
    catalog, ``icd10pcs``); ``max_tokens``: longer runs are cut into pieces of this many tokens.
    """

    def __init__(
        self, *, vocabulary: Iterable[str] | None = None, max_tokens: int = 10, catalog: str = "icd10cm"
    ) -> None:
        try:
            import spacy
            from negspacy.negation import Negex
            from negspacy.termsets import termset
            from spacy.lang.en.stop_words import STOP_WORDS
        except ImportError as error:  # pragma: no cover - both are dependencies
            raise MedcoderError(f"mention extraction needs spacy and negspacy ({error})") from error
        if max_tokens < 1:
            raise MedcoderError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self.vocabulary = frozenset(vocabulary) if vocabulary is not None else _catalog_words(catalog)
        self._nlp = spacy.blank("en")
        self._nlp.add_pipe("sentencizer")
        negations = termset("en_clinical")
        negations.add_patterns(_EXTRA_NEGATIONS)
        trigger_sets = {
            "negated": negations.get_patterns(),
            "hypothetical": HYPOTHETICAL_TRIGGERS,
            "family_history": FAMILY_TRIGGERS,
        }
        self._negex = {
            reason: Negex(
                self._nlp,
                f"medcoder_{reason}",
                neg_termset=terms,
                extension_name=f"medcoder_{reason}",
                span_keys=["mentions"],
            )
            for reason, terms in trigger_sets.items()
        }
        trigger_words = {
            word
            for terms in trigger_sets.values()
            for key in ("preceding_negations", "following_negations", "termination")
            for t in terms[key]
            for word in t.split()
        }
        self._breaks = (frozenset(STOP_WORDS) | _EXTRA_BREAKS | trigger_words) - _CONNECTORS

    def _is_break(self, token: Any) -> bool:
        if token.is_punct:
            return token.text not in ("-", "/")  # "non-Hodgkin", "and/or" stay whole
        return token.is_space or token.lower_ in self._breaks

    def _clinical(self, token: Any) -> bool:
        """A word of the catalog, an abbreviation ("COPD") or a word with a clinical suffix ("dyslipidemia")."""
        text = token.text
        if len(text) < 3 or not text.isalnum() or text.isdigit():
            return False
        if text.isupper() and len(text) <= 6:
            return True
        return token.is_alpha and (token.lower_ in self.vocabulary or token.lower_.endswith(_CLINICAL_SUFFIXES))

    def _chunks(self, doc: Any) -> list[tuple[int, int]]:
        """Token ranges of the candidate phrases of one sentence doc."""
        runs: list[tuple[int, int]] = []
        start = None
        for token in doc:
            if self._is_break(token):
                if start is not None:
                    runs.append((start, token.i))
                start = None
            elif start is None:
                start = token.i
        if start is not None:
            runs.append((start, len(doc)))
        chunks = []
        for begin, end in runs:
            while begin < end and doc[begin].lower_ in _CONNECTORS:  # no phrase starts or ends on a connector
                begin += 1
            while end > begin and doc[end - 1].lower_ in _CONNECTORS:
                end -= 1
            for piece in range(begin, end, self.max_tokens):
                piece_end = min(piece + self.max_tokens, end)
                if any(self._clinical(t) for t in doc[piece:piece_end]):
                    chunks.append((piece, piece_end))
        return chunks

    def extract(self, text: str) -> list[Mention]:
        """Every candidate phrase of ``text``, in order, each with ``excluded`` set or ``None``."""
        family_ranges = _family_sections(text)
        mentions: list[Mention] = []
        for sentence in self._nlp(text).sents:
            doc = sentence.as_doc()
            chunks = self._chunks(doc)
            if not chunks:
                continue
            doc.spans["mentions"] = [doc[a:b] for a, b in chunks]
            for negex in self._negex.values():
                negex(doc)
            offset = sentence.start_char
            for span in doc.spans["mentions"]:
                start, end = offset + span.start_char, offset + span.end_char
                reason = next((r for r in EXCLUSION_REASONS if span._.get(f"medcoder_{r}")), None)
                if reason is None and any(a <= start < b for a, b in family_ranges):
                    reason = "family_history"
                mentions.append(Mention(text[start:end], start, end, sentence.text.strip(), reason))
        return mentions

    def codable(self, text: str) -> list[Mention]:
        """The candidates that should be coded (none of the exclusion reasons applies)."""
        return [m for m in self.extract(text) if m.excluded is None]


def _family_sections(text: str) -> list[tuple[int, int]]:
    """Character ranges of sections headed ``FAMILY HISTORY:`` (up to the next header)."""
    headers = list(_SECTION.finditer(text))
    ranges = []
    for index, header in enumerate(headers):
        if _FAMILY_SECTION.search(header.group(1)):
            end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
            ranges.append((header.end(), end))
    return ranges
