"""``kind: mimic4``: MIMIC-IV discharge notes with their ICD-9 and/or ICD-10 codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from medcoder.config.base import PathText
from medcoder.data.mimic import (
    ICD9_DIAGNOSIS,
    ICD9_PROCEDURE,
    ICD10_DIAGNOSIS,
    Admission,
    add_code,
    apply_hadm_splits,
    as_int,
    build_notes,
    check_columns,
    find_table,
    icd10_procedure,
    iter_chunks,
    iter_code_rows,
    normalize_id,
    note_folder,
)
from medcoder.data.records import Note, check_notes
from medcoder.data.sources.base import SourceConfig
from medcoder.errors import InputError
from medcoder.registry import SOURCES


@SOURCES.register("mimic4")
class Mimic4Source(SourceConfig):
    """MIMIC-IV discharge notes with their ICD-9 and/or ICD-10 codes.

    Tables: ``root/hosp/diagnoses_icd``, ``root/hosp/procedures_icd`` and
    ``note/discharge`` under ``note_root`` (default ``root``; MIMIC-IV-Note is a
    separate download, so ``note_root`` may also be the ``note`` folder
    itself). ``icd_version`` 9 or 10 keeps only that version's codes and drops
    admissions left without one; ``meta["icd_versions"]`` maps each label to
    its version. ``splits_dir`` holds ``{train,dev,test}_hadm_ids.csv``.
    """

    kind: Literal["mimic4"] = "mimic4"
    root: PathText
    note_root: PathText | None = None
    icd_version: Literal[9, 10] | None = None
    include_procedures: bool = True
    splits_dir: PathText | None = None

    def read(self) -> list[Note]:
        root = Path(self.root)
        notes_path = find_table(note_folder(Path(self.note_root) if self.note_root is not None else root), "discharge")
        tables: list[tuple[Path, dict[int, Callable[[str], str]], bool]] = [
            (find_table(root / "hosp", "diagnoses_icd"), {9: ICD9_DIAGNOSIS, 10: ICD10_DIAGNOSIS}, False)
        ]
        if self.include_procedures:
            tables.append((find_table(root / "hosp", "procedures_icd"), {9: ICD9_PROCEDURE, 10: icd10_procedure}, True))
        note_columns = ["note_id", "subject_id", "hadm_id", "note_seq", "text"]
        code_columns = ["hadm_id", "icd_code", "icd_version"]
        check_columns(notes_path, note_columns)
        for path, _, _ in tables:
            check_columns(path, code_columns)

        admissions: dict[str, Admission] = {}
        for chunk in iter_chunks(notes_path, note_columns):
            rows = zip(*(chunk[name].tolist() for name in note_columns), strict=True)
            for note_id, subject, hadm, note_seq, text in rows:
                hadm = normalize_id(hadm)
                if not hadm:
                    continue
                admission = admissions.setdefault(hadm, Admission(subject_id=normalize_id(subject)))
                seq = as_int(note_seq, notes_path, "note_seq", note_id)
                admission.parts.append(((seq, note_id), note_id.strip(), text))

        without_note: set[str] = set()
        for path, formatters, is_procedure in tables:
            for line, hadm, raw, version_text in iter_code_rows(path, "hadm_id", "icd_code", "icd_version"):
                version = {"9": 9, "10": 10}.get(normalize_id(version_text))
                if version is None:
                    raise InputError(
                        f"expected 9 or 10, found {version_text!r}",
                        path=path,
                        line=line,
                        record=hadm,
                        field="icd_version",
                    )
                if hadm in admissions and self.icd_version in (None, version):
                    code = formatters[version](raw)
                    add_code(admissions[hadm], code, is_procedure)
                    admissions[hadm].versions[code] = version
                elif hadm not in admissions:
                    without_note.add(hadm)
        notes = build_notes(admissions, len(without_note), source=str(notes_path.parent), id_meta="note_ids")
        if self.splits_dir is not None:
            notes = apply_hadm_splits(notes, Path(self.splits_dir), "{split}_hadm_ids.csv")
        check_notes(notes, source=str(notes_path.parent))
        return notes
