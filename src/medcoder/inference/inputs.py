"""Read the notes to code: text files, JSONL files or stdin."""

from __future__ import annotations

import sys
from pathlib import Path

from medcoder.errors import InputError, MedcoderError
from medcoder.io import iter_json_objects, iter_text_lines, read_text_file


def _string_field(record: dict, field: str, *, source: str, number: int, note_id: str | None = None) -> str:
    if field not in record:
        raise InputError("missing field", path=source, line=number, record=note_id, field=field)
    value = record[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError("expected a non-empty string", path=source, line=number, record=note_id, field=field)
    return value


def _note_id(value: object, default: str, *, source: str, number: int, field: str) -> str:
    """A record's id: a string or an integer; absent or null gives ``default`` (``FILE:LINE``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        message = f"expected a string or integer id, found {type(value).__name__}"
        raise InputError(message, path=source, line=number, field=field)
    return str(value)


def _read_jsonl_lines(
    lines: list[tuple[int, str]], source: str, *, text_field: str, id_field: str, pair_field: str | None = None
) -> tuple[list[str], list[str], list[str]]:
    """``(ids, texts, pairs)`` of JSONL lines; ``pairs`` stays empty without ``pair_field``."""
    ids, texts, pairs = [], [], []
    for number, record in iter_json_objects(lines, source):
        default_id = f"{Path(source).name}:{number}"
        note_id = _note_id(record.get(id_field), default_id, source=source, number=number, field=id_field)
        texts.append(_string_field(record, text_field, source=source, number=number, note_id=note_id))
        if pair_field is not None:
            pairs.append(_string_field(record, pair_field, source=source, number=number, note_id=note_id))
        ids.append(note_id)
    return ids, texts, pairs


def read_prediction_inputs(
    inputs: list[Path],
    *,
    stdin_format: str = "text",
    text_field: str = "text",
    id_field: str = "id",
    pair_field: str | None = None,
) -> tuple[list[str], list[str], list[str] | None]:
    """``(ids, texts, pairs)`` from ``inputs``; ``-`` or no input reads stdin.

    A ``.jsonl`` file holds one note per line; any other file is one note
    whose id is the file name. With ``pair_field`` (a sentence-pair model)
    every note is a JSONL record holding its second text in that field.
    """
    ids: list[str] = []
    texts: list[str] = []
    pairs: list[str] = []
    for path in inputs or [Path("-")]:
        jsonl = stdin_format == "jsonl" if str(path) == "-" else path.suffix == ".jsonl"
        if pair_field is not None and not jsonl:
            where = "stdin (use --stdin-format jsonl)" if str(path) == "-" else str(path)
            raise MedcoderError(f"{where}: this model codes text pairs; give JSONL records with a {pair_field!r} field")
        if str(path) == "-":
            try:
                data = sys.stdin.buffer.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not valid UTF-8 (offset {exc.start})", path="<stdin>") from None
            if jsonl:
                lines = list(enumerate(data.splitlines(), start=1))
                new_ids, new_texts, new_pairs = _read_jsonl_lines(
                    lines, "<stdin>", text_field=text_field, id_field=id_field, pair_field=pair_field
                )
            else:
                if not data.strip():
                    raise InputError("the note is empty", path="<stdin>")
                new_ids, new_texts, new_pairs = ["stdin"], [data], []
        elif jsonl:
            new_ids, new_texts, new_pairs = _read_jsonl_lines(
                list(iter_text_lines(path)), str(path), text_field=text_field, id_field=id_field, pair_field=pair_field
            )
        else:
            text = read_text_file(path)
            if not text.strip():
                raise InputError("the note is empty or whitespace", path=path)
            new_ids, new_texts, new_pairs = [path.name], [text], []
        ids += new_ids
        texts += new_texts
        pairs += new_pairs
    if not texts:
        raise MedcoderError("no notes to code")
    return ids, texts, pairs if pair_field is not None else None
