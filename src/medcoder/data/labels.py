"""``LabelSpace``: the code <-> index map of a task, fitted on the train split only.

Every raw code goes through the same mapping (:meth:`LabelSpace.map_code`):
normalise -> truncate (optional) -> hierarchy level. Frequency filters
(``min_freq``, then ``top_k``) apply to the mapped codes. Codes the catalog
does not know are kept, counted in :attr:`LabelSpace.report` and summarised
in one logging warning. Each level is its own flat problem: ``level="chapter"``
gives a chapter classifier.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.config import LabelConfig
from medcoder.data.icd import (
    SYSTEMS,
    check_level,
    code_at_level,
    describe,
    is_icd9_procedure,
    nearest_known,
    normalize_code,
    truncate_code,
)
from medcoder.errors import ConfigError, InputError
from medcoder.io import atomic_write_json, read_json_file

logger = logging.getLogger(__name__)

FORMAT = "medcoder.labels.v1"
TASKS = ("multilabel", "multiclass")
N_EXAMPLES = 20
_OPTIONAL_KEYS = frozenset({"descriptions"})
_KEYS = (
    frozenset({"format", "system", "level", "truncate", "min_freq", "top_k", "task", "codes", "train_freq", "report"})
    | _OPTIONAL_KEYS
)


@functools.lru_cache(maxsize=1 << 17)
def _map_code(code: str, system: str, level: str, truncate: bool) -> str | None:
    normal = normalize_code(code, system)
    if not normal:
        return None
    if truncate:
        normal = truncate_code(normal)
    return code_at_level(normal, system, level)


def _by_frequency(freq: Counter[str] | dict[str, int], codes: Iterable[str]) -> list[str]:
    """``codes`` by descending frequency, ties by code string (deterministic)."""
    return sorted(codes, key=lambda code: (-freq[code], code))


def _summary(freq: Counter[str], codes: Iterable[str]) -> dict[str, Any]:
    ranked = _by_frequency(freq, codes)
    return {"count": len(ranked), "examples": ranked[:N_EXAMPLES]}


def _check_label_list(labels: Any, doc: int) -> None:
    # A bare string is a Sequence too; iterating it would silently yield characters.
    if isinstance(labels, str):
        raise InputError(f"document {doc}: expected a list of codes, got the string {labels!r}")
    for code in labels:
        if not isinstance(code, str):
            raise InputError(f"document {doc}: codes must be strings, got {code!r}")


def _catalog_report(placed_freq: Counter[str], system: str) -> dict[str, dict[str, Any]]:
    """Sort codes by how the catalog places them: not at all, via an ancestor, or no catalog."""
    unknown, via_ancestor, procedures = [], [], []
    for code in placed_freq if system != "none" else ():
        if system == "icd9cm" and is_icd9_procedure(code):
            procedures.append(code)
            continue
        known = nearest_known(code, system)
        if known is None:
            unknown.append(code)
        elif known != code:
            via_ancestor.append(code)
    return {
        "unknown_to_catalog": _summary(placed_freq, unknown),
        "resolved_via_ancestor": _summary(placed_freq, via_ancestor),
        "procedures_without_catalog": _summary(placed_freq, procedures),
    }


def _catalog_additions(kept: Sequence[str], config: LabelConfig) -> list[str]:
    """Catalog codes of the categories ``kept`` codes belong to, not in ``kept`` (``labels.catalog_codes``)."""
    if config.catalog_codes == "none":
        return []
    from medcoder.data.icd import catalog_entries

    categories = {code[:3] for code in kept}
    known = set(kept)
    codes, _ = catalog_entries(config.system)
    return [
        code
        for code in codes
        if code[:3] in categories and len(code.replace(".", "")) <= config.catalog_code_length and code not in known
    ]


def _option_problem(system: str, level: str, task: str, min_freq: Any, top_k: Any) -> tuple[str, str] | None:
    """``(key, message)`` for the first invalid fit option, else ``None``."""
    try:
        check_level(system, level)
    except ConfigError as exc:
        return ("level" if system in SYSTEMS else "system"), str(exc)
    if task not in TASKS:
        return "task", f"unknown task {task!r}; expected one of {', '.join(TASKS)}"
    if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
        return "min_freq", f"min_freq must be an integer >= 1, got {min_freq!r}"
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        return "top_k", f"top_k must be null/None or an integer >= 1, got {top_k!r}"
    return None


def _check_options(system: str, level: str, task: str, min_freq: int, top_k: int | None) -> None:
    problem = _option_problem(system, level, task, min_freq, top_k)
    if problem is not None:
        raise ConfigError(problem[1])


class LabelSpace:
    """Code <-> index map fitted on train only.

    Attributes:
        codes: index -> code. Multilabel: by descending train frequency, then
            code string; multiclass: by code string.
        index: code -> index.
        train_freq: documents per mapped code in train, *including* codes the
            filters dropped (so frequency bins can place them).
        system, level, truncate, min_freq, top_k, task: the fit options.
        report: what happened at fit (see :meth:`fit`).
    """

    def __init__(
        self,
        codes: Sequence[str],
        *,
        train_freq: dict[str, int],
        system: str = "none",
        level: str = "full",
        truncate: bool = False,
        min_freq: int = 1,
        top_k: int | None = None,
        task: str = "multilabel",
        report: dict[str, Any] | None = None,
        descriptions: dict[str, str | None] | None = None,
    ) -> None:
        _check_options(system, level, task, min_freq, top_k)
        if len(set(codes)) != len(codes):
            raise ValueError("LabelSpace codes must be unique")
        self.codes: list[str] = list(codes)
        self.index: dict[str, int] = {code: i for i, code in enumerate(self.codes)}
        self.train_freq: dict[str, int] = dict(train_freq)
        self.system = system
        self.level = level
        self.truncate = truncate
        self.min_freq = min_freq
        self.top_k = top_k
        self.task = task
        self.report: dict[str, Any] = dict(report or {})
        # Descriptions of the space's own codes travel in labels.json, so coding
        # notes with a saved model never has to load a catalog (seconds).
        self._descriptions: dict[str, str | None] | None = None if descriptions is None else dict(descriptions)

    @classmethod
    def fit(cls, label_lists: Iterable[Sequence[str]], config: LabelConfig, *, task: str = "multilabel") -> LabelSpace:
        """Fit on the train documents' label lists, as ``config`` (system, level, truncation, filters) says.

        ``min_freq`` (documents per mapped code) applies first, then ``top_k``
        keeps the k most frequent codes. For ``task="multiclass"`` every
        document must map to exactly one label (``InputError`` naming the
        document index otherwise).

        ``report`` keys: ``n_docs``; ``n_raw_codes`` (distinct normalised input
        codes); ``n_mapped_codes`` (distinct codes after truncation and level
        mapping); ``n_kept``; ``dropped_min_freq``, ``dropped_top_k``,
        ``unmappable`` (input codes with no code at the level),
        ``unknown_to_catalog`` (codes the catalog cannot place at all),
        ``resolved_via_ancestor`` (codes placed through their nearest known
        ancestor, e.g. ``T81.4XX``) and ``procedures_without_catalog`` (ICD-9
        procedures), each ``{"count", "examples"}`` with up to 20 examples,
        most frequent first; ``n_docs_without_kept_label``.
        """
        system, level, truncate = config.system, config.level, config.truncate
        min_freq, top_k = config.min_freq, config.top_k
        _check_options(system, level, task, min_freq, top_k)
        raw_freq: Counter[str] = Counter()  # normalised input codes, documents
        placed_freq: Counter[str] = Counter()  # normalised (+ truncated) codes the catalog places
        freq: Counter[str] = Counter()  # mapped codes, documents
        mapped_docs: list[list[str]] = []
        for doc, labels in enumerate(label_lists):
            _check_label_list(labels, doc)
            normal = {normalize_code(code, system) for code in labels} - {""}
            raw_freq.update(normal)
            placed_freq.update({truncate_code(code) if truncate else code for code in normal})
            mapped = [code for code in dict.fromkeys(_map_code(c, system, level, truncate) for c in labels) if code]
            if task == "multiclass" and len(mapped) != 1:
                raise InputError(
                    f"document {doc}: a multiclass task needs exactly one label per document, "
                    f"got {len(mapped)} ({mapped!r} from {list(labels)!r})"
                )
            freq.update(mapped)
            mapped_docs.append(mapped)

        frequent = [code for code in _by_frequency(freq, freq) if freq[code] >= min_freq]
        dropped_min = [code for code in freq if freq[code] < min_freq]
        kept = frequent if top_k is None else frequent[:top_k]
        dropped_top = [] if top_k is None else frequent[top_k:]
        codes = sorted(kept) if task == "multiclass" else kept
        kept_set = set(kept)
        catalog = _catalog_additions(kept, config) if task == "multilabel" else []
        codes = [*codes, *catalog]

        unmappable = [code for code in raw_freq if _map_code(code, system, level, truncate) is None]
        report = {
            "n_docs": len(mapped_docs),
            "n_raw_codes": len(raw_freq),
            "n_mapped_codes": len(freq),
            "n_kept": len(kept),
            "n_catalog_codes": len(catalog),
            "dropped_min_freq": _summary(freq, dropped_min),
            "dropped_top_k": _summary(freq, dropped_top),
            "unmappable": _summary(raw_freq, unmappable),
            **_catalog_report(placed_freq, system),
            "n_docs_without_kept_label": sum(1 for mapped in mapped_docs if kept_set.isdisjoint(mapped)),
        }
        _warn_about(report, system, level, len(placed_freq))
        train_freq = {code: freq[code] for code in _by_frequency(freq, freq)}
        train_freq.update(dict.fromkeys(catalog, 0))  # catalog codes: in the space, in no train note
        return cls(
            codes,
            train_freq=train_freq,
            system=system,
            level=level,
            truncate=truncate,
            min_freq=min_freq,
            top_k=top_k,
            task=task,
            report=report,
        )

    def __len__(self) -> int:
        return len(self.codes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSpace):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"LabelSpace({len(self)} codes, system={self.system!r}, level={self.level!r}, "
            f"truncate={self.truncate}, task={self.task!r})"
        )

    # Mapping ---------------------------------------------------------------------------

    def map_code(self, code: str) -> str | None:
        """Normalise -> truncate (if set) -> level; ``None`` if unmappable.

        The result may lie outside the space (an unseen or filtered code).
        """
        return _map_code(code, self.system, self.level, self.truncate)

    def map_labels(self, labels: Sequence[str]) -> list[str]:
        """Mapped codes of one document, de-duplicated, in input order.

        Unmappable codes are left out; codes outside the space are kept.
        """
        mapped = (self.map_code(code) for code in labels)
        return [code for code in dict.fromkeys(mapped) if code is not None]

    def transform(self, label_lists: Iterable[Sequence[str]]) -> np.ndarray:
        """Indicator matrix ``bool [n_docs, n_labels]``; codes outside the space are ignored.

        bool, never int8: scikit-learn's one-vs-rest scrambles int8 columns past 128.
        """
        lists = list(label_lists)
        matrix = np.zeros((len(lists), len(self.codes)), dtype=bool)
        for doc, labels in enumerate(lists):
            _check_label_list(labels, doc)
            for code in self.map_labels(labels):
                column = self.index.get(code)
                if column is not None:
                    matrix[doc, column] = True
        return matrix

    def class_indices(self, label_lists: Iterable[Sequence[str]]) -> np.ndarray:
        """Multiclass targets ``int64 [n_docs]``; -1 where no label is in the space.

        Raises ``InputError`` naming the document when one has several labels in the space.
        """
        matrix = self.transform(label_lists)
        counts = matrix.sum(axis=1)
        if matrix.size and counts.max() > 1:
            doc = int(np.argmax(counts > 1))
            raise InputError(f"document {doc}: expected one label in the label space, got {int(counts[doc])}")
        indices = np.full(matrix.shape[0], -1, dtype=np.int64)
        rows = counts == 1
        indices[rows] = np.argmax(matrix[rows], axis=1)
        return indices

    def coverage(self, label_lists: Iterable[Sequence[str]]) -> dict[str, Any]:
        """How much of another split's gold falls outside the space.

        Returns ``n_docs``, ``n_assignments`` (mapped, de-duplicated per
        document), ``n_unseen_assignments`` and ``n_unseen_codes`` (mapped codes
        not in the space: evaluation counts them as misses),
        ``n_unmappable_assignments`` and up to 20 ``examples`` of unseen codes,
        most frequent first.
        """
        unseen: Counter[str] = Counter()
        n_docs = n_assignments = n_unmappable = 0
        for doc, labels in enumerate(label_lists):
            _check_label_list(labels, doc)
            n_docs += 1
            mapped = self.map_labels(labels)
            normal = {normalize_code(code, self.system) for code in labels} - {""}
            n_unmappable += sum(1 for code in normal if self.map_code(code) is None)
            n_assignments += len(mapped)
            unseen.update(code for code in mapped if code not in self.index)
        return {
            "n_docs": n_docs,
            "n_assignments": n_assignments,
            "n_unseen_assignments": sum(unseen.values()),
            "n_unseen_codes": len(unseen),
            "n_unmappable_assignments": n_unmappable,
            "examples": _by_frequency(unseen, unseen)[:N_EXAMPLES],
        }

    # Descriptions ----------------------------------------------------------------------

    def description(self, code: str) -> str | None:
        """Catalog description of ``code`` (any code; ``None`` when unknown or system ``"none"``)."""
        if code in self.index:
            return self._own_descriptions()[code]
        return describe(code, self.system)

    def descriptions(self) -> list[str | None]:
        """Descriptions of :attr:`codes`, in index order."""
        own = self._own_descriptions()
        return [own[code] for code in self.codes]

    def _own_descriptions(self) -> dict[str, str | None]:
        if self._descriptions is None:
            self._descriptions = {code: describe(code, self.system) for code in self.codes}
        return self._descriptions

    # Persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``labels.json`` schema, ``"format": "medcoder.labels.v1"``)."""
        return {
            "format": FORMAT,
            "system": self.system,
            "level": self.level,
            "truncate": self.truncate,
            "min_freq": self.min_freq,
            "top_k": self.top_k,
            "task": self.task,
            "codes": list(self.codes),
            "train_freq": dict(self.train_freq),
            "report": self.report,
            "descriptions": self._own_descriptions(),
        }

    def to_json(self, path: str | Path) -> None:
        """Write ``labels.json`` atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> LabelSpace:
        """Read a file written by :meth:`to_json`; ``InputError`` naming the file and key otherwise."""
        return cls.from_dict(read_json_file(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> LabelSpace:
        """Validate and load the :meth:`to_dict` form; ``source`` names it in errors."""

        def bad(key: str, message: str) -> InputError:
            return InputError(message, path=source, field=key)

        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", path=source)
        if data.get("format") != FORMAT:
            raise bad("format", f"not a medcoder label space: expected {FORMAT!r}, got {data.get('format')!r}")
        for key in data:
            if key not in _KEYS:
                raise bad(key, "unknown key")
        for key in _KEYS - _OPTIONAL_KEYS:
            if key not in data:
                raise bad(key, "missing key")
        for key, expected in (("system", str), ("level", str), ("task", str), ("truncate", bool), ("report", dict)):
            if not isinstance(data[key], expected):
                raise bad(key, f"expected {expected.__name__}, got {data[key]!r}")
        codes, train_freq = data["codes"], data["train_freq"]
        if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
            raise bad("codes", "expected a list of non-empty strings")
        if len(set(codes)) != len(codes):
            raise bad("codes", "codes are not unique")
        if not isinstance(train_freq, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in train_freq.values()
        ):
            raise bad("train_freq", "expected an object of code -> document count (integer >= 0)")
        missing = [code for code in codes if code not in train_freq]
        if missing:
            raise bad("train_freq", f"no count for {len(missing)} codes, e.g. {missing[:5]!r}")
        descriptions = data.get("descriptions")
        if descriptions is not None and (
            not isinstance(descriptions, dict)
            or set(descriptions) != set(codes)
            or not all(d is None or isinstance(d, str) for d in descriptions.values())
        ):
            raise bad("descriptions", "expected an object of code -> description (string or null) for every code")
        problem = _option_problem(data["system"], data["level"], data["task"], data["min_freq"], data["top_k"])
        if problem is not None:
            raise bad(*problem)
        return cls(
            codes,
            train_freq=train_freq,
            system=data["system"],
            level=data["level"],
            truncate=data["truncate"],
            min_freq=data["min_freq"],
            top_k=data["top_k"],
            task=data["task"],
            report=data["report"],
            descriptions=descriptions,
        )


def _warn_about(report: dict[str, Any], system: str, level: str, n_codes: int) -> None:
    """One warning summarising codes the catalog could not place, or the level could not map."""
    parts = []
    unknown = report["unknown_to_catalog"]
    if unknown["count"]:
        parts.append(
            f"{unknown['count']} of {n_codes} distinct codes are unknown to the {system} catalog "
            f"(no description or hierarchy), e.g. {', '.join(unknown['examples'][:5])}"
        )
    unmappable = report["unmappable"]
    if unmappable["count"]:
        parts.append(
            f"{unmappable['count']} distinct codes have no {level}-level code and are left out, "
            f"e.g. {', '.join(unmappable['examples'][:5])}"
        )
    if parts:
        logger.warning("label space: %s", "; ".join(parts))
