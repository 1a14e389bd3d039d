"""Evaluate any saved system on labelled notes, with the thresholds it tuned on dev."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcoder.data.dataset import load_dataset
from medcoder.data.records import SPLITS, Note
from medcoder.data.sources.jsonl import JsonlSource
from medcoder.errors import MedcoderError
from medcoder.inference.base import Coder
from medcoder.inference.load import load
from medcoder.progress import LogReporter, Reporter


def evaluate_system(
    path: str | Path, *, data: str | Path | None = None, split: str = "test", reporter: Reporter | None = None
) -> tuple[Coder, dict[str, Any]]:
    """(the system, its figures on ``split`` of ``data`` — a JSONL file — or of its own data config).

    ``data`` is read with the field names of the system's own JSONL/CSV source
    (``text_pair`` for the second text of a pair model trained on other sources).
    """
    reporter = reporter or LogReporter()
    if split not in (*SPLITS, "all"):
        raise MedcoderError(f"--split must be one of train, dev, test, all; got {split!r}")
    coder = load(path)
    own = coder.data_config()
    with reporter.task("reading data"):
        if data is None:
            groups = load_dataset(own)
            notes: list[Note] = [n for s in SPLITS for n in groups[s]] if split == "all" else groups[split]
        else:
            fields = own.source.record_fields() or {"text_pair_field": "text_pair" if coder.needs_pairs else None}
            notes = JsonlSource(path=data, **fields).read()
            if split != "all":
                notes = [n for n in notes if n.split == split]
    if not notes:
        raise MedcoderError(f"{data or 'the model data'}: no notes in split {split!r} (use --split all)")
    with reporter.task("scoring notes", total=len(notes)) as update:
        return coder, coder.evaluate(notes, progress=update)
