"""Benchmark: mention extraction against the synthetic notes' gold spans, and what it finds in CodiEsp.

The synthetic notes record every coded mention as a character span and every
distractor that must not be coded (negated, ruled out, hypothetical, family
history) with its reason. We count:
- coded-span recall: a coded span overlapped by a codable mention;
- distractor leaks by reason: a distractor overlapped by a codable mention;
- speed (notes/s) and mentions per note.
On CodiEsp-D English test notes (when ../shared is there): mentions per note and
the share excluded by each reason (no gold spans exist for English).

    .venv/bin/python bench/mention_extraction.py [--notes 600]

Writes bench/results/mention_extraction.md and .json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.retrieval.mentions import EXCLUSION_REASONS, MentionExtractor

ROOT = Path(__file__).resolve().parents[1]
CODIESP = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"


def overlaps(mentions, start: int, end: int) -> bool:
    return any(m.start < end and start < m.end for m in mentions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mention_extraction")
    args = parser.parse_args()
    extractor = MentionExtractor()
    notes = SyntheticSource(n_notes=args.notes, seed=11).read()
    coded = found = mentions_total = 0
    leaks: collections.Counter[str] = collections.Counter()
    distractors: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    for note in notes:
        mentions = extractor.extract(note.text)
        mentions_total += len(mentions)
        codable = [m for m in mentions if m.excluded is None]
        for span in note.spans:
            coded += 1
            found += overlaps(codable, span.start, span.end)
        for item in note.meta["uncoded_mentions"]:
            distractors[item["reason"]] += 1
            leaks[item["reason"]] += overlaps(codable, item["start"], item["end"])
    seconds = time.perf_counter() - start
    result = {
        "synthetic": {
            "notes": len(notes),
            "coded_spans": coded,
            "coded_recall": found / coded,
            "distractors": dict(distractors),
            "leaked": dict(leaks),
            "mentions_per_note": mentions_total / len(notes),
            "notes_per_s": len(notes) / seconds,
        },
    }
    lines = [
        "# Mention extraction (spaCy tokens + negspacy NegEx triggers)",
        "",
        f"Synthetic notes ({len(notes)}, seed 11): coded-span recall **{found / coded:.3f}** "
        f"({found}/{coded}); {mentions_total / len(notes):.1f} candidate mentions per note; "
        f"{len(notes) / seconds:.0f} notes/s.",
        "",
        "| distractor reason | distractors | leaked as codable |",
        "|---|---|---|",
    ]
    lines += [f"| {reason} | {distractors[reason]} | {leaks[reason]} |" for reason in sorted(distractors)]
    if CODIESP.is_file():
        with CODIESP.open(encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if '"split": "test"' in line]
        counts: collections.Counter[str | None] = collections.Counter()
        for text in texts:
            counts.update(m.excluded for m in extractor.extract(text))
        total = sum(counts.values())
        result["codiesp_test"] = {
            "notes": len(texts),
            "mentions_per_note": total / len(texts),
            "excluded_share": {r: counts[r] / total for r in EXCLUSION_REASONS},
        }
        lines += [
            "",
            f"CodiEsp-D English test ({len(texts)} notes): {total / len(texts):.1f} mentions per note; "
            "excluded: "
            + ", ".join(f"{r} {counts[r] / total:.1%}" for r in EXCLUSION_REASONS)
            + " (no gold spans exist for English, so no recall here).",
        ]
    lines.append("")
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
