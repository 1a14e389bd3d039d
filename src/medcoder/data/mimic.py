"""Reading MIMIC tables: what the ``mimic3`` and ``mimic4`` sources share.

Discharge summaries are gathered per admission, coded with ICD-9/ICD-10. MIMIC-III follows Mullenbach et al. 2018 (caml-mimic): one note per admission
made of its discharge summaries (report + addenda), labelled with the
admission's diagnosis and procedure codes, dotted so that diagnosis and
procedure codes never collide. pandas reads the tables in chunks because
NOTEEVENTS is about 4 GB; it is imported only when a MIMIC reader runs.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcoder.data.icd import icd9_add_dot, normalize_code
from medcoder.data.records import SPLITS, Note
from medcoder.errors import InputError, MedcoderError
from medcoder.io import iter_text_lines

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CHUNK_ROWS = 100_000
_INTEGER_FLOAT = re.compile(r"^(\d+)\.0*$")


# Formatters for the undotted codes MIMIC stores; dotting keeps ICD-9 diagnoses
# (401.9) and procedures (40.19) apart, which share undotted spellings (4019).
ICD9_DIAGNOSIS = partial(icd9_add_dot, procedure=False)
ICD9_PROCEDURE = partial(icd9_add_dot, procedure=True)
ICD10_DIAGNOSIS = partial(normalize_code, system="icd10cm")


def icd10_procedure(code: str) -> str:
    """ICD-10-PCS codes are seven characters with no dot; only normalise case."""
    return code.strip().upper()


@dataclass
class Admission:
    """Discharge-summary parts and codes gathered for one hospital admission."""

    subject_id: str = ""
    parts: list[tuple[tuple[Any, ...], str, str]] = field(default_factory=list)  # (sort key, note id, text)
    codes: dict[str, None] = field(default_factory=dict)  # ordered set
    procedures: set[str] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)


def add_code(admission: Admission, code: str, is_procedure: bool) -> None:
    admission.codes[code] = None
    if is_procedure:
        admission.procedures.add(code)


def build_notes(admissions: dict[str, Admission], without_note: int, *, source: str, id_meta: str) -> list[Note]:
    """One note per admission with text and codes; parts joined by a blank line.

    ``without_note`` counts coded admissions that had no discharge summary (for the log).
    """
    notes = []
    uncoded = 0
    for hadm in sorted(admissions, key=_id_sort_key):
        admission = admissions[hadm]
        if not admission.codes:
            uncoded += 1
            continue
        parts = sorted(admission.parts, key=lambda part: part[0])
        meta: dict[str, Any] = {
            "subject_id": admission.subject_id,
            id_meta: [note_id for _, note_id, _ in parts],
            "procedure_codes": [code for code in admission.codes if code in admission.procedures],
        }
        if admission.versions:
            meta["icd_versions"] = dict(admission.versions)
        text = "\n\n".join(stripped for _, _, text in parts if (stripped := text.strip()))
        notes.append(Note(id=hadm, text=text, labels=tuple(admission.codes), meta=meta))
    if uncoded:
        logger.warning("%s: dropped %d admissions with a discharge summary but no code", source, uncoded)
    if without_note:
        logger.warning("%s: dropped %d coded admissions without a discharge summary", source, without_note)
    logger.info("%s: %d admissions with a discharge summary and codes", source, len(notes))
    return notes


def keep_top_codes(notes: list[Note], top_k: int, *, source: str) -> list[Note]:
    """Keep the ``top_k`` most frequent codes; drop notes left without a code."""
    counts = Counter(code for note in notes for code in note.labels)
    keep = {code for code, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]}
    kept = []
    for note in notes:
        labels = tuple(code for code in note.labels if code in keep)
        if labels:
            meta = dict(note.meta, procedure_codes=[c for c in note.meta["procedure_codes"] if c in keep])
            if "icd_versions" in meta:
                meta["icd_versions"] = {c: v for c, v in meta["icd_versions"].items() if c in keep}
            kept.append(replace(note, labels=labels, meta=meta))
    if len(kept) < len(notes):
        logger.warning("%s: dropped %d admissions with none of the top %d codes", source, len(notes) - len(kept), top_k)
    return kept


def apply_hadm_splits(notes: list[Note], folder: Path, pattern: str) -> list[Note]:
    """Set each note's split from one-id-per-line files; drop notes not listed."""
    assignment: dict[str, str] = {}
    for split in SPLITS:
        path = folder / pattern.format(split=split)
        for number, line in iter_text_lines(path):
            hadm = normalize_id(line)
            if not hadm or (number == 1 and hadm.lower() == "hadm_id"):
                continue  # a blank line, or a header some exports add
            if not hadm.isdigit():
                raise InputError(f"expected a numeric HADM_ID, found {line.strip()!r}", path=path, line=number)
            if hadm in assignment:
                message = f"HADM_ID also listed in the {assignment[hadm]} split"
                raise InputError(message, path=path, line=number, record=hadm)
            assignment[hadm] = split
    kept = [replace(note, split=assignment[note.id]) for note in notes if note.id in assignment]
    if len(kept) < len(notes):
        logger.warning("%s: dropped %d admissions not listed in any split file", folder, len(notes) - len(kept))
    if len(kept) < len(assignment):
        logger.warning("%s: %d listed admissions have no usable note", folder, len(assignment) - len(kept))
    return kept


def note_folder(note_root: Path) -> Path:
    """``note_root/note`` when it exists, else ``note_root`` itself."""
    return note_root / "note" if (note_root / "note").is_dir() else note_root


def find_table(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"file not found (also looked for {name}.csv.gz)", path=folder / f"{name}.csv")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise MedcoderError("the MIMIC readers need pandas: pip install pandas") from None
    return pandas


def check_columns(path: Path, columns: list[str]) -> None:
    pd = _pandas()
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the CSV header: {exc}", path=path, line=1) from None
    for column in columns:
        if column not in header:
            found = ", ".join(map(str, header))
            raise InputError(f"missing column; columns found: {found}", path=path, line=1, field=column)


def iter_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """Yield the needed columns as strings ('' for missing), ``CHUNK_ROWS`` rows at a time."""
    pd = _pandas()
    try:
        reader = pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
        with reader:
            yield from reader
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        # pandas' ParserError and EmptyDataError are ValueErrors; gzip errors are OSErrors.
        raise InputError(f"cannot parse the CSV: {exc}", path=path) from None


def iter_code_rows(path: Path, hadm_column: str, *columns: str) -> Iterator[tuple[Any, ...]]:
    """Yield ``(line, hadm_id, value, ...)`` for rows with an admission id and a code.

    Code tables have no quoted newlines, so the file line is the row index + 2.
    """
    line = 1
    for chunk in iter_chunks(path, [hadm_column, *columns]):
        for hadm, *values in zip(*(chunk[name].tolist() for name in (hadm_column, *columns)), strict=True):
            line += 1
            hadm = normalize_id(hadm)
            if hadm and values[0].strip():  # MIMIC has a few code rows with an empty code
                yield (line, hadm, *values)


def normalize_id(value: str) -> str:
    """Strip, and turn ``'12345.0'`` (a float-formatted export) into ``'12345'``."""
    value = value.strip()
    match = _INTEGER_FLOAT.match(value)
    return match.group(1) if match else value


def as_int(value: str, path: Path, column: str, record: str) -> int:
    try:
        return int(normalize_id(value))
    except ValueError:
        raise InputError(f"expected an integer, found {value!r}", path=path, record=record, field=column) from None


def _id_sort_key(hadm: str) -> tuple[int, int | str]:
    return (0, int(hadm)) if hadm.isdigit() else (1, hadm)
