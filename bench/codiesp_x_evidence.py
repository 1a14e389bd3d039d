"""Benchmark: does a CodiEsp system's evidence point at the official CodiEsp-X gold spans?

CodiEsp-X (``original/<split>/<split>X.tsv``) gives, for every code of a note, the character
spans of the note's Spanish text that the annotators coded it from: tab-separated doc id,
``DIAGNOSTICO`` | ``PROCEDIMIENTO``, the code in lower case, the span's text and its offsets
(``182 190``, or discontinuous ``1847 1856;1943 1949``). The saved system codes the notes of
the split (``coder.predict(texts, explain=True)``: the codes above its dev-tuned threshold,
each with its evidence spans), and for every correctly predicted code (predicted and gold for
the note) that has X spans we ask:

- first span on gold: does ``evidence[0]`` overlap a gold span of that code (character overlap > 0)?
- any span on gold: does any of the spans shown for the code?
- no evidence: how many such codes come with no span at all?
- first span, same words: of the first spans off gold, how many say words that a gold span of the
  code says elsewhere in the note (a linear model points at a term's first occurrence);
- for a system of several signals, the first span of each ``source`` on gold.

Codes are compared as the system's label space names them (X's ``s22.49xa`` and the note's
``S22.49XA`` map to the same code). Every X row is checked against the note: the offsets must lie
inside the text; a row whose text differs from the note's text at its offsets (a few annotation
slips such as a dropped final dot) is kept and counted. A row that cannot be read is skipped with
a warning; most rows disagreeing with the notes stops the run (wrong language or wrong split?).

    .venv/bin/python bench/codiesp_x_evidence.py BUNDLE [--split test] [--data ../shared/data/codiesp]
        [--kind DIAGNOSTICO] [--out FILE.md]

BUNDLE must have been trained on the Spanish notes (X offsets index the Spanish text). Prints a
Markdown table, written to ``--out`` too when given. Needs ../shared/data (not shipped).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "codiesp"
KINDS = ("DIAGNOSTICO", "PROCEDIMIENTO")
SHOWN_WARNINGS = 5  # bad X rows named one by one; the rest only counted

Span = tuple[int, int]


def overlaps(span: Span, gold: Iterable[Span]) -> bool:
    """Whether the character span ``[start, end)`` shares at least one character with one of ``gold``.

    Touching is not overlapping, and an empty span (or gold fragment, such as X's ``341 341``) has no character.
    """
    start, end = span
    return any(max(start, g_start) < min(end, g_end) for g_start, g_end in gold)


def parse_offsets(text: str) -> list[Span]:
    """``"182 190"`` -> [(182, 190)]; ``"1847 1856;1943 1949"`` -> two fragments. ValueError when malformed."""
    fragments = []
    for part in text.split(";"):
        numbers = part.split()
        if len(numbers) != 2:
            raise ValueError(f"offsets {text!r}: expected 'START END' fragments separated by ';'")
        start, end = int(numbers[0]), int(numbers[1])
        if start < 0 or end < start:
            raise ValueError(f"offsets {text!r}: a fragment ends before it starts or starts below 0")
        fragments.append((start, end))
    return fragments


@dataclass
class GoldSpans:
    """The X rows of one kind: per (note id, code) the gold fragments and the span texts, plus what was skipped."""

    spans: dict[tuple[str, str], list[Span]] = field(default_factory=dict)
    texts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rows: int = 0  # rows of the file
    kept: int = 0  # rows of the kind asked for, read
    other_kind: int = 0
    skipped: int = 0  # bad rows (warned)
    unknown_note: int = 0  # rows of notes not in the split (warned as bad rows too)
    text_mismatch: int = 0  # kept rows whose text differs from the note's text at their offsets
    warnings: list[str] = field(default_factory=list)


def read_x_spans(
    path: Path,
    notes: Mapping[str, str],
    *,
    kind: str = "DIAGNOSTICO",
    map_code: Callable[[str], str | None] = str.upper,
) -> GoldSpans:
    """Read a CodiEsp-X file: the gold spans of ``kind`` rows, checked against ``notes`` (``{id: text}``).

    A malformed row (fields, offsets, a note not in ``notes``, offsets outside the note) is skipped with a
    ``FILE:LINE: reason`` warning; the file missing or not UTF-8 raises an ``InputError`` naming it. Raises
    a ``MedcoderError`` when no row is usable or most rows disagree with the notes' text.
    """
    from medcoder.errors import MedcoderError
    from medcoder.io import iter_text_lines

    gold = GoldSpans()

    def bad(line: int, reason: str) -> None:
        gold.skipped += 1
        if len(gold.warnings) < SHOWN_WARNINGS:
            gold.warnings.append(f"{path}:{line}: {reason}; row skipped")

    for number, line in iter_text_lines(path):
        if not line.strip():
            continue
        gold.rows += 1
        fields = line.split("\t")
        if len(fields) != 5:
            bad(number, f"expected 5 tab-separated fields, found {len(fields)}")
            continue
        note_id, row_kind, raw_code, span_text, raw_offsets = (f.strip() for f in fields)
        if row_kind not in KINDS:
            bad(number, f"type {row_kind!r} is neither {' nor '.join(KINDS)}")
            continue
        if row_kind != kind:
            gold.other_kind += 1
            continue
        try:
            fragments = parse_offsets(raw_offsets)
        except ValueError as exc:
            bad(number, str(exc))
            continue
        text = notes.get(note_id)
        if text is None:
            gold.unknown_note += 1
            bad(number, f"note {note_id!r} is not among the split's notes")
            continue
        if any(end > len(text) for _, end in fragments):
            bad(number, f"offsets {raw_offsets!r} run past the end of note {note_id!r} ({len(text)} characters)")
            continue
        code = map_code(raw_code) if raw_code else None
        if not code:
            bad(number, f"code {raw_code!r} cannot be read")
            continue
        if " ".join(text[s:e] for s, e in fragments) != span_text:
            gold.text_mismatch += 1
        key = (note_id, code)
        gold.spans.setdefault(key, []).extend(fragments)
        gold.texts.setdefault(key, []).append(span_text)
        gold.kept += 1
    if not gold.kept:
        first = f"; the first: {gold.warnings[0]}" if gold.warnings else ""
        raise MedcoderError(f"{path}: no usable {kind} row ({gold.rows} rows, {gold.skipped} skipped){first}")
    if gold.text_mismatch > gold.kept / 2:
        raise MedcoderError(
            f"{path}: {gold.text_mismatch} of {gold.kept} spans do not match the notes' text at their offsets: "
            "X offsets index the Spanish notes of the same split (a system trained on the English notes?)"
        )
    return gold


@dataclass
class EvidenceFigures:
    notes: int = 0
    predicted: int = 0  # predicted codes
    correct: int = 0  # predicted codes gold for the note
    with_x: int = 0  # ... that have X spans of that code
    first_on_gold: int = 0
    any_on_gold: int = 0
    no_evidence: int = 0
    first_same_words: int = 0  # first span off gold whose text a gold span of the code contains
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source: [codes with a span, first on gold]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def measure(
    predictions: Sequence[Any],
    note_ids: Sequence[str],
    gold_codes: Sequence[Iterable[str]],
    gold: GoldSpans,
) -> EvidenceFigures:
    """The evidence figures of ``predictions`` (``NotePrediction`` records, explained) against the X spans.

    ``gold_codes``: each note's gold codes, named as the predictions name codes. A code counts when it is
    predicted (``CodeScore.predicted``), gold for the note and has X spans for that code.
    """
    out = EvidenceFigures(notes=len(predictions))
    for prediction, note_id, codes in zip(predictions, note_ids, gold_codes, strict=True):
        wanted = set(codes)
        for scored in prediction.codes:
            if not scored.predicted:
                continue
            out.predicted += 1
            if scored.code not in wanted:
                continue
            out.correct += 1
            spans = gold.spans.get((note_id, scored.code))
            if not spans:
                continue
            out.with_x += 1
            evidence = list(scored.evidence or [])
            if not evidence:
                out.no_evidence += 1
                continue
            first = evidence[0]
            if overlaps((first.start, first.end), spans):
                out.first_on_gold += 1
            else:
                said = first.text.lower()
                out.first_same_words += any(said in t.lower() for t in gold.texts[(note_id, scored.code)])
            out.any_on_gold += any(overlaps((e.start, e.end), spans) for e in evidence)
            firsts: dict[str, Any] = {}
            for e in evidence:
                firsts.setdefault(e.source or "(model)", e)
            for source, e in firsts.items():
                counts = out.by_source.setdefault(source, [0, 0])
                counts[0] += 1
                counts[1] += overlaps((e.start, e.end), spans)
    return out


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.4f} ({part}/{whole})" if whole else f"n/a (0/{whole})"


def render(figures: EvidenceFigures, gold: GoldSpans, *, system: str, split: str, threshold: Any) -> str:
    """The figures as Markdown: the evidence table, then the X file's rows."""
    f = figures
    lines = [
        f"CodiEsp-X evidence of {system} on the {split} notes (decision threshold {threshold}):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| notes | {f.notes} |",
        f"| predicted codes | {f.predicted} |",
        f"| correctly predicted codes | {f.correct} |",
        f"| ... with X spans of that code | {f.with_x} |",
        f"| first span on a gold span | {_share(f.first_on_gold, f.with_x)} |",
        f"| any shown span on a gold span | {_share(f.any_on_gold, f.with_x)} |",
        f"| no evidence span | {_share(f.no_evidence, f.with_x)} |",
        f"| first span off gold, its words in a gold span of the code | "
        f"{_share(f.first_same_words, f.with_x - f.first_on_gold - f.no_evidence)} |",
    ]
    for source, (shown, on_gold) in sorted(f.by_source.items()):
        lines.append(f"| first span of source `{source}` on a gold span | {_share(on_gold, shown)} |")
    lines += [
        "",
        f"X rows: {gold.rows} read, {gold.kept} used, {gold.other_kind} of the other type, {gold.skipped} skipped "
        f"(bad rows; {gold.unknown_note} of them for notes outside the split), {gold.text_mismatch} used rows whose "
        f"text differs from the note's text at their offsets; {len(gold.spans)} (note, code) pairs with spans.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="a saved system trained on the Spanish CodiEsp notes")
    parser.add_argument("--split", choices=("train", "dev", "test"), default="test")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the CodiEsp folder holding original/ (default: ../shared/data/codiesp)",
    )
    parser.add_argument("--kind", choices=KINDS, default="DIAGNOSTICO", help="the X rows to score against")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    import medcoder
    from medcoder.data.dataset import load_dataset
    from medcoder.data.icd import normalize_code
    from medcoder.errors import MedcoderError
    from medcoder.io import atomic_write_text

    try:
        clock = time.perf_counter()
        coder = medcoder.load(args.bundle)
        if not coder.can_explain():
            raise MedcoderError(f"{args.bundle}: {coder.capabilities.why_not_explain}")
        notes = load_dataset(coder.data_config())[args.split]
        labels = coder.label_space()
        system = labels.system if labels is not None else "icd10cm"
        map_code = labels.map_code if labels is not None else (lambda c: normalize_code(c, system))
        x_file = args.data / "original" / args.split / f"{args.split}X.tsv"
        gold = read_x_spans(x_file, {n.id: n.text for n in notes}, kind=args.kind, map_code=map_code)
        load_s = time.perf_counter() - clock
        clock = time.perf_counter()
        predictions = coder.predict([n.text for n in notes], ids=[n.id for n in notes], explain=True)
        predict_s = time.perf_counter() - clock
        figures = measure(predictions, [n.id for n in notes], coder.gold(notes), gold)
    except MedcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in gold.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if gold.skipped > len(gold.warnings):
        print(f"warning: {gold.skipped - len(gold.warnings)} more bad rows skipped in {x_file}", file=sys.stderr)
    rule = coder.decision
    threshold = "argmax" if rule is None else f"{rule.global_:.4f}" if rule.per_label is None else "per code"
    table = render(figures, gold, system=coder.identity, split=args.split, threshold=threshold)
    table += f"\nLoad {load_s:.1f} s, predict with evidence {predict_s:.1f} s ({len(notes)} notes).\n"
    print(table, end="")
    if args.out is not None:
        try:
            atomic_write_text(args.out, table)
        except OSError as exc:
            print(f"error: {args.out}: cannot write ({exc.strerror or exc})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
