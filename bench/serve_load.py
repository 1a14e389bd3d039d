"""Load on loopback: N concurrent clients coding CodiEsp notes against `medcoder serve` for D seconds.

    python bench/serve_load.py --model runs/codiesp-tfidf-unigram --clients 16 64 --seconds 60
    python bench/serve_load.py --model runs/codiesp-tfidf-unigram runs/codiesp-transformer-transfer/general/seed0

The server runs as its own process (`medcoder serve`, defaults: 1 inference worker, queue 8), so its
peak RSS (VmHWM) is its own. Each client is an asyncio task with its own connection: it sends one note
(POST /v1/code, explain on, top_k 10), waits for the answer, and sends the next; a 503 (queue full) is
counted apart and the client waits the Retry-After it was given (at most 2 s) before trying again, as a
well-behaved client does. Latency is measured for answered requests (200). Client and server share the
machine's cores. Writes bench/results/serve_load.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

import httpx
from _serving import serve_process

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _notes() -> list[str]:
    if not DATA.is_file():
        sys.exit(f"{DATA}: the CodiEsp data is not there (../shared/data beside the repository)")
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in records if r.get("split") == "test"]


async def _client(base: str, notes: list[str], stop_at: float, stats: dict, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while time.perf_counter() < stop_at:
            text = rng.choice(notes)
            start = time.perf_counter()
            try:
                response = await client.post("/v1/code", json={"text": text, "top_k": 10, "explain": True})
            except httpx.HTTPError as exc:
                stats["errors"].append(type(exc).__name__)
                continue
            took = time.perf_counter() - start
            if response.status_code == 200:
                if time.perf_counter() <= stop_at:
                    stats["latency"].append(took)
            elif response.status_code == 503:
                stats["busy"] += 1
                await asyncio.sleep(min(2.0, float(response.headers.get("retry-after", "1"))))
            else:
                stats["errors"].append(f"HTTP {response.status_code}")


async def _load(base: str, notes: list[str], clients: int, seconds: float) -> dict:
    stats: dict = {"latency": [], "busy": 0, "errors": []}
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_client(base, notes, stop_at, stats, seed) for seed in range(clients)))
    return stats


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(model: Path, clients: list[int], seconds: float, notes: list[str]) -> list[dict]:
    rows = []
    with serve_process(model) as (base, server):
        ready_rss = _peak_rss_mb(server.pid)
        httpx.post(base + "/v1/code", json={"text": notes[0]}, timeout=120)  # warm-up
        for n in clients:
            stats = asyncio.run(_load(base, notes, n, seconds))
            lat = stats["latency"]
            rows.append(
                {
                    "model": str(model),
                    "clients": n,
                    "seconds": seconds,
                    "answered": len(lat),
                    "requests_per_s": len(lat) / seconds,
                    "p50_ms": 1000 * _quantile(lat, 0.50),
                    "p95_ms": 1000 * _quantile(lat, 0.95),
                    "p99_ms": 1000 * _quantile(lat, 0.99),
                    "busy_503": stats["busy"],
                    "errors": len(stats["errors"]),
                    "error_kinds": sorted(set(stats["errors"])),
                    "rss_ready_mb": ready_rss,
                    "peak_rss_mb": _peak_rss_mb(server.pid),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", type=Path, default=[ROOT / "runs" / "codiesp-tfidf-unigram"])
    parser.add_argument("--clients", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "serve_load")
    args = parser.parse_args()
    notes = _notes()
    rows = [row for model in args.model for row in run(model, args.clients, args.seconds, notes)]
    table = [
        "| model | clients | answered/s | p50 ms | p95 ms | p99 ms | 503 (queue full) | errors | RSS ready MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {Path(r['model']).name} | {r['clients']} | {r['requests_per_s']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['busy_503']} | {r['errors']} | {r['rss_ready_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    text = (
        "# `medcoder serve` under load (loopback)\n\n"
        f"`python bench/serve_load.py --model {' '.join(str(m) for m in args.model)} --clients "
        f"{' '.join(map(str, args.clients))} --seconds {args.seconds:g}`, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores shared by the server and the clients. CodiEsp-D English test notes, one per request, "
        "explain on, top_k 10. Server: 1 inference worker, queue 8, timeout 60 s.\n\n" + "\n".join(table) + "\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(text, encoding="utf-8")
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
