"""``kind: codiesp``: the official CodiEsp release folder, and its CodiEsp-X evidence spans."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from medcoder.config.base import PathText
from medcoder.data.records import SPLITS, Note, Span, check_notes
from medcoder.data.sources.base import SourceConfig
from medcoder.errors import ConfigError, InputError
from medcoder.io import iter_text_lines, read_text_file
from medcoder.registry import SOURCES

_TEXT_FOLDERS = {"en": "text_files_en", "es": "text_files"}


@SOURCES.register("codiesp")
class CodiespSource(SourceConfig):
    """The CodiEsp release: ``root/{split}/{split}{D|P}.tsv`` + one text file per document.

    ``subtask`` "D" (diagnoses) or "P" (procedures); ``language`` "en" reads
    ``text_files_en/`` (machine translation), "es" reads ``text_files/``. The
    split is the folder; codes are upper-cased (``n44.8 -> N44.8``). Some
    documents have no procedure, so empty label sets are allowed for "P" only.
    """

    kind: Literal["codiesp"] = "codiesp"
    root: PathText
    subtask: Literal["D", "P"] = "D"
    language: Literal["en", "es"] = "en"

    def read(self) -> list[Note]:
        subtask, language = self.subtask, self.language
        root = Path(self.root)
        splits = [split for split in SPLITS if (root / split).is_dir()]
        if not splits:
            raise InputError("no train/, dev/ or test/ folder found (expected the CodiEsp release layout)", path=root)
        notes: list[Note] = []
        for split in splits:
            folder = root / split
            tsv = folder / f"{split}{subtask}.tsv"
            text_dir = folder / _TEXT_FOLDERS[language]
            if not text_dir.is_dir():
                raise InputError("text folder not found", path=text_dir)
            text_files = {file.stem: file for file in sorted(text_dir.glob("*.txt"))}
            codes: dict[str, dict[str, None]] = {}
            for number, (article, code) in _codiesp_rows(tsv, 2):
                if article not in text_files:
                    message = f"code for a document with no text file ({text_dir / article}.txt)"
                    raise InputError(message, path=tsv, line=number, record=article)
                codes.setdefault(article, {})[code.upper()] = None
            for article, file in text_files.items():
                text = read_text_file(file)
                if not text.strip():
                    raise InputError("text file is empty or whitespace", path=file, record=article, field="text")
                if article not in codes and subtask == "D":
                    raise InputError(f"document has no code in {tsv}", path=file, record=article, field="labels")
                notes.append(Note(article, text, tuple(codes.get(article, ())), split, meta={"language": language}))
        check_notes(notes, source=str(root), allow_empty_labels=subtask == "P")
        return notes


def read_codiesp_spans(root: str | Path, split: str, language: str = "es") -> dict[str, list[Span]]:
    """Read CodiEsp-X evidence spans: ``root/{split}/{split}X.tsv`` -> ``{article id: [Span]}``.

    Columns: articleID, DIAGNOSTICO|PROCEDIMIENTO, code, text reference, and
    positions "start end" with ';' between the pieces of a discontinuous
    mention; each piece becomes one ``Span`` labelled with the upper-cased
    code. Empty pieces ("341 341", present in the release) are skipped. The
    positions index the Spanish originals, so ``language`` must be "es".
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if language != "es":
        raise ConfigError(f"CodiEsp-X positions index the Spanish texts; language must be 'es', got {language!r}")
    tsv = Path(root) / split / f"{split}X.tsv"
    spans: dict[str, list[Span]] = {}
    for number, (article, kind, code, _, positions) in _codiesp_rows(tsv, 5):
        where: dict[str, Any] = {"path": tsv, "line": number, "record": article}
        if kind not in ("DIAGNOSTICO", "PROCEDIMIENTO"):
            raise InputError(f"expected DIAGNOSTICO or PROCEDIMIENTO, found {kind!r}", **where, field="label")
        pieces = spans.setdefault(article, [])
        for piece in positions.split(";"):
            bounds = piece.split()
            if len(bounds) != 2 or not all(bound.isdigit() for bound in bounds) or int(bounds[0]) > int(bounds[1]):
                raise InputError(f"expected 'start end' offsets, found {piece!r}", **where, field="reference-position")
            if bounds[0] != bounds[1]:
                pieces.append(Span(int(bounds[0]), int(bounds[1]), code.upper()))
    return spans


def _codiesp_rows(tsv: Path, width: int) -> Iterable[tuple[int, list[str]]]:
    """Yield ``(line, fields)`` of a header-less CodiEsp TSV, fields stripped and non-empty."""
    for number, line in iter_text_lines(tsv):
        if not line.strip():
            continue
        fields = [value.strip() for value in line.split("\t")]
        # The text reference (4th field of the X files) may legitimately be empty.
        if len(fields) != width or not all(value for index, value in enumerate(fields) if index != 3):
            raise InputError(f"expected {width} non-empty tab-separated fields, found {line!r}", path=tsv, line=number)
        yield number, fields
