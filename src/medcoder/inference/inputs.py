"""Read the notes to code: text files, JSONL files or stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medcoder.errors import InputError, MedcoderError
from medcoder.io import iter_text_lines, read_text_file


def _read_jsonl_lines(lines: list[tuple[int, str]], source: str, *, text_field: str, id_field: str):
    ids, texts = [], []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=source, line=number) from None
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", path=source, line=number)
        if text_field not in record:
            raise InputError("missing field", path=source, line=number, field=text_field)
        text = record[text_field]
        note_id = str(record.get(id_field, f"{Path(source).name}:{number}"))
        if not isinstance(text, str) or not text.strip():
            raise InputError("expected a non-empty string", path=source, line=number, record=note_id, field=text_field)
        ids.append(note_id)
        texts.append(text)
    return ids, texts


def read_prediction_inputs(
    inputs: list[Path], *, stdin_format: str = "text", text_field: str = "text", id_field: str = "id"
) -> tuple[list[str], list[str], None]:
    """``(ids, texts, pairs)`` from ``inputs``; ``-`` or no input reads stdin.

    A ``.jsonl`` file holds one note per line; any other file is one note
    whose id is the file name.
    """
    ids: list[str] = []
    texts: list[str] = []
    for path in inputs or [Path("-")]:
        if str(path) == "-":
            try:
                data = sys.stdin.buffer.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not valid UTF-8 (offset {exc.start})", path="<stdin>") from None
            if stdin_format == "jsonl":
                lines = list(enumerate(data.splitlines(), start=1))
                new_ids, new_texts = _read_jsonl_lines(lines, "<stdin>", text_field=text_field, id_field=id_field)
            else:
                if not data.strip():
                    raise InputError("the note is empty", path="<stdin>")
                new_ids, new_texts = ["stdin"], [data]
        elif path.suffix == ".jsonl":
            new_ids, new_texts = _read_jsonl_lines(
                list(iter_text_lines(path)), str(path), text_field=text_field, id_field=id_field
            )
        else:
            text = read_text_file(path)
            if not text.strip():
                raise InputError("the note is empty or whitespace", path=path)
            new_ids, new_texts = [path.name], [text]
        ids += new_ids
        texts += new_texts
    if not texts:
        raise MedcoderError("no notes to code")
    return ids, texts, None
