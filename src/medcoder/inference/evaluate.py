"""Evaluate a saved bundle on labelled notes with its dev-tuned thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcoder.data.records import SPLITS, Note
from medcoder.data.sources import read_jsonl
from medcoder.errors import MedcoderError
from medcoder.inference.predictor import Predictor
from medcoder.models.bundle import Bundle
from medcoder.progress import LogReporter, Reporter
from medcoder.training.run import evaluate_scores, load_dataset, texts_of


def _jsonl_fields(bundle: Bundle) -> dict[str, Any]:
    """Field names for ``--data``: those the model was trained with (JSONL or CSV source), else the defaults."""
    source = bundle.config.data.source
    if source.kind == "jsonl":
        return source.model_dump(include={"id_field", "text_field", "labels_field", "split_field", "text_pair_field"})
    if source.kind == "csv":
        return {
            "id_field": source.id_column,
            "text_field": source.text_column,
            "labels_field": source.labels_column,
            "split_field": source.split_column or "split",
            "text_pair_field": source.text_pair_column,
        }
    return {"text_pair_field": "text_pair" if bundle.task == "pair" else None}


def evaluate_bundle(
    model_dir: str | Path, *, data: str | Path | None = None, split: str = "test", reporter: Reporter | None = None
) -> dict[str, Any]:
    """Metrics of the bundle on ``split`` of ``data`` (a JSONL file) or of its own data config.

    ``data`` is read with the field names of the bundle's own JSONL/CSV source
    (``text_pair`` for the second text of a pair model trained on other sources).
    """
    reporter = reporter or LogReporter()
    if split not in (*SPLITS, "all"):
        raise MedcoderError(f"--split must be one of train, dev, test, all; got {split!r}")
    predictor = Predictor.from_dir(model_dir)
    bundle = predictor.bundle
    with reporter.task("reading data"):
        if data is None:
            groups = load_dataset(bundle.config.data)
            notes: list[Note] = [n for s in SPLITS for n in groups[s]] if split == "all" else groups[split]
        else:
            notes = read_jsonl(data, **_jsonl_fields(bundle))
            if split != "all":
                notes = [n for n in notes if n.split == split]
    if not notes:
        raise MedcoderError(f"{data or 'the model data'}: no notes in split {split!r} (use --split all)")
    texts, pairs = texts_of(notes)
    with reporter.task("scoring notes", total=len(notes)) as update:
        scores = predictor.predict_proba(texts, pairs=pairs, progress=update)
    return evaluate_scores(scores, notes, bundle.labels, bundle.thresholds)
