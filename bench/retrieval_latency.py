"""Benchmark: build the whole ICD-10-CM code index, then time queries against it, on CPU.

1. Index build: embed every code description of the catalog (98,186 codes: the
   74,719 leaves and the 23,467 categories above them; ``--leaves-only`` for the leaves
   alone) with the bi-encoder, into a fresh folder (no cache), and save it.
2. Query latency, one query at a time, for --queries mentions taken from
   CodiEsp-D English test notes (the synthetic notes when ../shared is absent):
   - search only: one query vector against the whole index (top-10 by cosine);
   - mention: embed the mention text, then search;
   - note: extract the note's mentions, embed them, search each, aggregate.
   Median and p95 over the queries, after 5 warm-up queries.
3. Loading the saved index from the cache folder.

    .venv/bin/python bench/retrieval_latency.py [--encoder minilm|FOLDER] [--threads 2] [--queries 300]

Writes bench/results/retrieval_latency.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medcoder.io import atomic_write_json, atomic_write_text
from medcoder.retrieval.biencoder import BiEncoder
from medcoder.retrieval.fusion import retrieve
from medcoder.retrieval.index import CodeIndex, cached_index
from medcoder.retrieval.mentions import MentionExtractor

ROOT = Path(__file__).resolve().parents[1]
CODIESP = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"


def test_notes(limit: int) -> tuple[list[str], str]:
    if CODIESP.is_file():
        with CODIESP.open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle]
        return [r["text"] for r in records if r.get("split") == "test"][:limit], "CodiEsp-D English test notes"
    from medcoder.data.sources.synthetic import SyntheticSource

    return [n.text for n in SyntheticSource(n_notes=limit, seed=0).read()], "synthetic notes"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def timed(function, items) -> list[float]:
    for item in items[:5]:  # warm-up
        function(item)
    times = []
    for item in items:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--leaves-only", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval_latency")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    encoder = BiEncoder.load(args.encoder)
    fingerprint = encoder.fingerprint()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        index, from_cache = cached_index(encoder.encode, fingerprint, cache, leaves_only=args.leaves_only)
        build_s = time.perf_counter() - start
        assert not from_cache
        folder = next(Path(cache).iterdir())
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        load_times = timed(lambda _: CodeIndex.load(folder), [None] * 3)
    print(f"index: {len(index.codes)} codes built in {build_s:.1f} s", file=sys.stderr)

    extractor = MentionExtractor()
    notes, notes_name = test_notes(args.queries)
    mentions = [m for text in notes for m in extractor.codable(text)]
    rng = np.random.default_rng(0)
    picked = [mentions[i] for i in rng.choice(len(mentions), size=min(args.queries, len(mentions)), replace=False)]
    vectors = encoder.encode([m.text for m in picked])
    search_times = timed(lambda v: index.search(v[None, :], 10), list(vectors))
    mention_times = timed(lambda m: index.search(encoder.encode([m.text]), 10), picked)
    note_times = timed(lambda text: retrieve(encoder, index, [extractor.codable(text)], k=10), notes)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "encoder": encoder.source,
        "codes": len(index.codes),
        "dim": index.dim,
        "leaves_only": args.leaves_only,
        "index_build_s": build_s,
        "codes_per_s": len(index.codes) / build_s,
        "index_size_mb": size_mb,
        "index_load_s": statistics.median(load_times),
        "queries_from": notes_name,
        "search_only": percentiles(search_times),
        "mention": percentiles(mention_times),
        "note": percentiles(note_times) | {"mentions_per_note": len(mentions) / len(notes)},
    }
    lines = [
        "# Code retrieval over the whole ICD-10-CM catalog: index build and query latency",
        "",
        f"{len(index.codes):,} codes x {index.dim} dims ({'leaves only' if args.leaves_only else 'leaves + categories'}),"
        f" encoder {Path(encoder.source).name}, {args.threads} CPU threads; queries: {notes_name}.",
        "",
        f"- index build (embed every description, save): **{build_s:.1f} s** ({result['codes_per_s']:.0f} codes/s);"
        f" {size_mb:.0f} MB on disk; loading it from the cache: {result['index_load_s']:.2f} s",
        "",
        "| one query | median | p95 | queries |",
        "|---|---|---|---|",
    ]
    for name, key in (
        ("search only (vector -> top-10 codes)", "search_only"),
        ("mention (embed + search)", "mention"),
        (f"note (extract ~{result['note']['mentions_per_note']:.0f} mentions, embed, search, aggregate)", "note"),
    ):
        row = result[key]
        lines.append(f"| {name} | {row['median_ms']:.1f} ms | {row['p95_ms']:.1f} ms | {row['n']} |")
    lines.append("")
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
