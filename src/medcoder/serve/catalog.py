"""Catalog search for the coder who adds a code the model missed: by code prefix or by words."""

from __future__ import annotations

import re
from dataclasses import dataclass

from medcoder.inference.base import Coder

_CODE_LIKE = re.compile(r"^[A-Za-z]?\d[0-9A-Za-z.]*$|^[A-Za-z]\d{0,2}$|^[A-Za-z]\d[0-9A-Za-z]{0,5}\.?$")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Entry:
    code: str
    description: str
    in_model: bool  # the served system scores this code


def _key(code: str) -> str:
    return code.replace(".", "").upper()


class CodeSearch:
    """The served system's codes plus its ICD-10 catalog (when the labels are ICD-10-CM or ICD-10-PCS)."""

    def __init__(self, coder: Coder, system: str) -> None:
        entries: dict[str, Entry] = {}
        for code in coder.codes:
            entries[code] = Entry(code, coder.description(code) or "", True)
        from medcoder.data.icd import CATALOG_SYSTEMS, catalog_entries

        if system in CATALOG_SYSTEMS:
            for code, description in zip(*catalog_entries(system), strict=True):
                if code not in entries:
                    entries[code] = Entry(code, description, False)
                elif not entries[code].description:
                    entries[code] = Entry(code, description, True)
        self.system = system
        self.entries = list(entries.values())
        self._keys = [_key(e.code) for e in self.entries]
        self._lower = [e.description.lower() for e in self.entries]
        self._words = [len(_WORD.findall(text)) for text in self._lower]
        self._exact = {e.code: e for e in self.entries}
        self._by_key: dict[str, Entry] = {}
        for entry, key in zip(self.entries, self._keys, strict=True):
            self._by_key.setdefault(key, entry)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, code: str) -> Entry | None:
        """The entry of ``code`` as written, else ignoring case and the dot (``e119`` is ``E11.9``)."""
        return self._exact.get(code) or self._by_key.get(_key(code))

    def search(self, query: str, limit: int = 20) -> list[Entry]:
        """Codes whose code starts with ``query`` (it looks like a code) or whose description has all its words.

        Word matches are word prefixes ("hyperten" finds hypertension); codes the
        served system scores come first, then the shorter, more general descriptions.
        """
        query = query.strip()
        found: list[tuple[tuple, int]] = []
        if _CODE_LIKE.match(query):
            prefix = _key(query)
            for i, key in enumerate(self._keys):
                if key.startswith(prefix):
                    found.append(((len(key), not self.entries[i].in_model, key), i))
        if not found:
            words = _WORD.findall(query.lower())
            if not words:
                return []
            patterns = [re.compile(r"\b" + re.escape(w)) for w in words]
            longest = max(words, key=len)
            for i, text in enumerate(self._lower):
                if longest in text and all(p.search(text) for p in patterns):
                    found.append(((not self.entries[i].in_model, self._words[i], self._keys[i]), i))
        found.sort()
        return [self.entries[i] for _, i in found[:limit]]
