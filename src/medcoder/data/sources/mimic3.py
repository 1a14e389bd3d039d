"""``kind: mimic3``: MIMIC-III v1.4 discharge summaries with their ICD-9 codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from medcoder.config.base import PathText
from medcoder.data.mimic import (
    ICD9_DIAGNOSIS,
    ICD9_PROCEDURE,
    Admission,
    add_code,
    apply_hadm_splits,
    as_int,
    build_notes,
    check_columns,
    find_table,
    iter_chunks,
    iter_code_rows,
    keep_top_codes,
    normalize_id,
)
from medcoder.data.records import Note, check_notes
from medcoder.data.sources.base import SourceConfig
from medcoder.registry import SOURCES

logger = logging.getLogger(__name__)


@SOURCES.register("mimic3")
class Mimic3Source(SourceConfig):
    """MIMIC-III v1.4 discharge summaries with their ICD-9 codes.

    ``root`` holds NOTEEVENTS, DIAGNOSES_ICD and PROCEDURES_ICD as ``.csv`` or
    ``.csv.gz``. ``label_set="50"`` keeps the ``top_k`` most frequent codes
    (counted once per admission, diagnoses and procedures together, ties broken
    by code) and drops admissions left without a code. ``splits_dir`` holds
    Mullenbach's ``{train,dev,test}_{full|50}_hadm_ids.csv``; admissions not
    listed there are dropped. Notes are ordered by HADM_ID.
    """

    kind: Literal["mimic3"] = "mimic3"
    root: PathText
    label_set: Literal["full", "50"] = "full"
    top_k: int = Field(50, ge=1)  # label_set "50": how many of the most frequent codes are kept
    include_procedures: bool = True
    splits_dir: PathText | None = None

    def read(self) -> list[Note]:
        root = Path(self.root)
        notes_path = find_table(root, "NOTEEVENTS")
        tables = [(find_table(root, "DIAGNOSES_ICD"), ICD9_DIAGNOSIS, False)]
        if self.include_procedures:
            tables.append((find_table(root, "PROCEDURES_ICD"), ICD9_PROCEDURE, True))
        note_columns = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "ISERROR", "TEXT"]
        code_columns = ["HADM_ID", "ICD9_CODE"]
        # Check every header before the long NOTEEVENTS pass so a bad table fails fast.
        check_columns(notes_path, note_columns)
        for path, _, _ in tables:
            check_columns(path, code_columns)

        admissions: dict[str, Admission] = {}
        skipped_error = 0
        for chunk in iter_chunks(notes_path, note_columns):
            chunk = chunk[chunk["CATEGORY"].str.strip().str.lower() == "discharge summary"]
            rows = zip(*(chunk[name].tolist() for name in note_columns), strict=True)
            for row_id, subject, hadm, chartdate, _, iserror, text in rows:
                if normalize_id(iserror) == "1":
                    skipped_error += 1  # MIMIC marks notes a physician flagged as wrong
                    continue
                hadm = normalize_id(hadm)
                if not hadm:
                    continue
                admission = admissions.setdefault(hadm, Admission(subject_id=normalize_id(subject)))
                row_number = as_int(row_id, notes_path, "ROW_ID", hadm)
                admission.parts.append(((chartdate.strip(), row_number), str(row_number), text))
        if skipped_error:
            logger.info("%s: skipped %d discharge summaries with ISERROR=1", notes_path, skipped_error)

        without_note: set[str] = set()
        for path, formatter, is_procedure in tables:
            for _, hadm, raw in iter_code_rows(path, "HADM_ID", "ICD9_CODE"):
                if hadm in admissions:
                    add_code(admissions[hadm], formatter(raw), is_procedure)
                else:
                    without_note.add(hadm)
        notes = build_notes(admissions, len(without_note), source=str(root), id_meta="note_row_ids")
        if self.label_set == "50":
            notes = keep_top_codes(notes, self.top_k, source=str(root))
        if self.splits_dir is not None:
            notes = apply_hadm_splits(notes, Path(self.splits_dir), "{split}_" + self.label_set + "_hadm_ids.csv")
        check_notes(notes, source=str(root))
        return notes
