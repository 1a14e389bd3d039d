"""Batch prediction at scale: throughput, memory over time, sharding over 2 processes, kill -9 and --resume.

Runs ``medcoder predict`` on N notes (default 100,000; a JSONL file made from
synthetic notes cycled with unique ids, or ``--input FILE``) with a model
(``--model DIR``, any bundle; default: a TF-IDF model trained here on synthetic
notes):

(a) one process;
(b) ``--shard 0/2`` and ``--shard 1/2`` as two concurrent processes, whose
    outputs together must be the one-process output (as sets of lines);
(c) unless ``--no-kill``: one process killed with SIGKILL half-way, then
    ``--resume``: its output must be byte-identical to (a)'s.

Each process's RSS is sampled every 0.5 s (psutil, else /proc/PID/status); the
report gives notes/s, the RSS series (start / median / max / end and the slope
over the second half of the run) and the projected time for 1,000,000 notes on
the 2 cores. Results go to bench/results/batch_predict.md (and .json)::

    .venv/bin/python bench/batch_predict.py                       # 100,000 notes, trains its own model
    .venv/bin/python bench/batch_predict.py --notes 5000 --model runs/demo/model --report /tmp/bp.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """name: batch-predict-bench
data: {source: {kind: synthetic, n_notes: 1500, n_codes: 60, seed: 0}}
labels: {system: icd10cm}
model: {type: tfidf_lr.v1, n_jobs: 1}
"""
SAMPLE_SECONDS = 0.5


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (None once it has ended)."""
    try:
        import psutil

        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return None
    except ImportError:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


@dataclass
class Run:
    """One ``medcoder predict`` process: its wall time, RSS samples and summary."""

    name: str
    seconds: float = 0.0
    coding_from: float | None = None  # seconds after the start when its first batch was recorded
    coding_until: float | None = None  # when the progress file went (the run renamed its output: coding done)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS bytes)
    summary: dict = field(default_factory=dict)
    returncode: int | None = None

    def coding_samples(self) -> list[tuple[float, int]]:
        """The samples while it coded: after Python start and loading the model, before the exit."""
        start = self.coding_from if self.coding_from is not None else 0.0
        until = self.coding_until if self.coding_until is not None else float("inf")
        return [(t, r) for t, r in self.samples if start <= t < until] or self.samples


def medcoder(*args: object) -> list[str]:
    return [sys.executable, "-m", "medcoder.cli", "-q", "predict", *map(str, args)]


def run_processes(
    commands: dict[str, tuple[list[str], Path]], work: Path, *, kill_when=None
) -> tuple[dict[str, Run], float]:
    """Start every command (with its output file) at once; sample each one's RSS every 0.5 s until all end.

    ``kill_when(name, elapsed)`` -> True sends that process SIGKILL. Returns the
    runs and the CPU seconds (user + system) all of them used.
    """
    import resource

    runs = {name: Run(name) for name in commands}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    logs = {name: (work / f"{name.replace(' ', '_').replace('/', '-')}.log").open("wb") for name in commands}
    procs = {
        name: subprocess.Popen(cmd, stderr=logs[name], stdout=subprocess.DEVNULL) for name, (cmd, _) in commands.items()
    }
    ended: dict[str, float] = {}
    last_sample = -SAMPLE_SECONDS
    while len(ended) < len(procs):
        now = time.perf_counter() - start
        sample = now - last_sample >= SAMPLE_SECONDS
        if sample:
            last_sample = now
        for name, proc in procs.items():
            if name in ended:
                continue
            if proc.poll() is not None:
                ended[name] = now
                continue
            if not sample:
                continue
            rss = rss_bytes(proc.pid)
            if rss is not None:
                runs[name].samples.append((now, rss))
            progress = commands[name][1].with_name(commands[name][1].name + ".progress.json")
            if runs[name].coding_from is None:
                try:
                    if json.loads(progress.read_text())["records"] > 0:
                        runs[name].coding_from = now
                except (OSError, ValueError, KeyError):
                    pass
            elif runs[name].coding_until is None and not progress.exists():
                runs[name].coding_until = now
            if kill_when is not None and kill_when(name, now):
                os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.02)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for name, proc in procs.items():
        runs[name].returncode = proc.wait()
        runs[name].seconds = ended[name]
        logs[name].close()
        if proc.returncode not in (0, -signal.SIGKILL):
            err = Path(logs[name].name).read_text(errors="replace")
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return runs, cpu


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (MB per minute) over the second half of the samples."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [t for t, _ in half]
    ys = [r / 2**20 for _, r in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def rss_row(run: Run) -> str:
    """RSS once coding had begun: first sample, median, max, last, slope over the second half, samples."""
    coding = run.coding_samples()
    mb = [r / 2**20 for _, r in coding]
    if not mb:
        return f"| {run.name} | - | - | - | - | - | 0 |"
    return (
        f"| {run.name} | {mb[0]:.0f} | {statistics.median(mb):.0f} | {max(mb):.0f} | {mb[-1]:.0f} | "
        f"{slope_mb_per_min(coding):+.2f} | {len(mb)} |"
    )


def write_input(path: Path, n: int) -> None:
    from medcoder.data.synthetic import SyntheticSource, generate_notes

    texts = [note.text for note in generate_notes(SyntheticSource(n_notes=2000, n_codes=60, seed=1))]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"note-{i:07d}", "text": texts[i % len(texts)]}) + "\n")


def line_multiset_digest(paths: list[Path]) -> tuple[int, str]:
    """(lines, a digest of the sorted lines): equal for two sets of files holding the same lines."""
    digests = sorted(hashlib.sha256(line).digest() for path in paths for line in path.read_bytes().splitlines())
    return len(digests), hashlib.sha256(b"".join(digests)).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="any bundle; default: train a TF-IDF model on synthetic notes")
    parser.add_argument("--notes", type=int, default=100_000, help="notes to generate (ignored with --input)")
    parser.add_argument("--input", type=Path, help="a JSONL/Parquet file of notes instead of generated ones")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 + --resume run")
    parser.add_argument("--work", type=Path, help="folder for the input and outputs (default: a temporary one)")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "batch_predict.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-predict-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model
        if model is None:
            (work / "run.yaml").write_text(CONFIG, encoding="utf-8")
            model = work / "model"
            print("training a TF-IDF model on 1,500 synthetic notes ...", flush=True)
            subprocess.run(
                [sys.executable, "-m", "medcoder.cli", "-q", "train", str(work / "run.yaml"), "-o", str(model)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        data = args.input
        if data is None:
            data = work / "notes.jsonl"
            print(f"writing {args.notes:,} notes to {data} ...", flush=True)
            write_input(data, args.notes)
        input_mb = data.stat().st_size / 2**20
        common = (model, data, "--batch-size", args.batch_size)

        print("(a) one process ...", flush=True)
        runs, cpu_one = run_processes(
            {"1 process": (medcoder(*common, "-o", work / "one.jsonl"), work / "one.jsonl")}, work
        )
        one = runs["1 process"]
        one.summary = json.loads((work / "one.jsonl.summary.json").read_text())
        n = one.summary["records_in_inputs"]

        print("(b) --shard 0/2 and 1/2 at once ...", flush=True)
        shards, cpu_two = run_processes(
            {
                f"shard {i}/2": (
                    medcoder(*common, "-o", work / f"shard{i}.jsonl", "--shard", f"{i}/2"),
                    work / f"shard{i}.jsonl",
                )
                for i in range(2)
            },
            work,
        )
        for i, run in enumerate(shards.values()):
            run.summary = json.loads((work / f"shard{i}.jsonl.summary.json").read_text())
        same_lines = line_multiset_digest([work / "one.jsonl"]) == line_multiset_digest(
            [work / "shard0.jsonl", work / "shard1.jsonl"]
        )

        kill: dict = {}
        if not args.no_kill:
            print("(c) kill -9 half-way, then --resume ...", flush=True)
            half = one.seconds / 2
            cut = work / "cut.jsonl"
            killed, _ = run_processes(
                {"killed": (medcoder(*common, "-o", cut), cut)}, work, kill_when=lambda _, t: t >= half
            )
            if killed["killed"].returncode != -signal.SIGKILL:
                raise SystemExit("the run to kill ended before it was killed: give more notes")
            state = json.loads((work / "cut.jsonl.progress.json").read_text())
            resumed = run_processes({"resumed": (medcoder(*common, "-o", cut, "--resume"), cut)}, work)[0]["resumed"]
            kill = {
                "killed_after_s": round(killed["killed"].seconds, 1),
                "notes_recorded_at_kill": state["summary"]["notes_read"],
                "resume_seconds": round(resumed.seconds, 1),
                "identical": cut.read_bytes() == (work / "one.jsonl").read_bytes(),
            }

    wall_two = max(run.seconds for run in shards.values())
    rate_one, rate_two = n / one.seconds, n / wall_two
    hours_one, hours_two = 1_000_000 / rate_one / 3600, 1_000_000 / rate_two / 3600
    # on 2 cores of our own: the CPU time the two shards spent per note, over the 2 cores (not slowed by other work)
    hours_cpu = 1_000_000 * cpu_two / n / 2 / 3600
    cores = os.cpu_count()
    results = {
        "notes": n,
        "input_mb": round(input_mb, 1),
        "batch_size": args.batch_size,
        "model": str(args.model or "TF-IDF (tfidf_lr.v1) trained on 1,500 synthetic notes, 60 codes"),
        "cpus": cores,
        "one_process": {
            "wall_s": round(one.seconds, 1),
            "cpu_s": round(cpu_one, 1),
            "notes_per_s": round(rate_one, 1),
            "summary": one.summary,
        },
        "two_shards": {
            "wall_s": round(wall_two, 1),
            "cpu_s": round(cpu_two, 1),
            "notes_per_s": round(rate_two, 1),
            "per_shard": {name: {"wall_s": round(r.seconds, 1), "summary": r.summary} for name, r in shards.items()},
            "same_lines_as_one_process": same_lines,
        },
        "projected_hours_1m_notes": {
            "one_process": round(hours_one, 2),
            "two_shards": round(hours_two, 2),
            "two_shards_cpu_bound": round(hours_cpu, 2),
        },
        "rss_mb": {  # [seconds since start, MB]; coding_from: when the first batch was recorded
            run.name: {
                "coding_from": run.coding_from,
                "coding_until": run.coding_until,
                "samples": [[round(t, 1), round(r / 2**20, 1)] for t, r in run.samples],
            }
            for run in [one, *shards.values()]
        },
        "kill_resume": kill,
    }
    lines = [
        "# Batch prediction: throughput, memory over time, shards, kill -9 + resume (bench/batch_predict.py)",
        "",
        f"`medcoder predict` on {n:,} notes ({input_mb:,.0f} MB of JSONL), `--batch-size {args.batch_size}`; "
        f"model: {results['model']}; {cores} CPU cores (shared with other work while measured). Wall time and "
        "notes/s are of the whole command (Python start, loading the model, reading, coding, writing); "
        "'coding notes/s' counts from the first record read (the summary's figure); CPU s is user + system time.",
        "",
        "| run | wall s | CPU s | notes/s | coded | errors | coding notes/s |",
        "|---|---|---|---|---|---|---|",
        f"| 1 process | {one.seconds:.1f} | {cpu_one:.1f} | {rate_one:,.0f} | {one.summary['coded']:,} | "
        f"{one.summary['errors']:,} | {one.summary['notes_per_second']:,.0f} |",
    ]
    for name, run in shards.items():
        lines.append(
            f"| {name} | {run.seconds:.1f} | | {run.summary['notes_read'] / run.seconds:,.0f} | "
            f"{run.summary['coded']:,} | {run.summary['errors']:,} | {run.summary['notes_per_second']:,.0f} |"
        )
    shard_summaries = [r.summary for r in shards.values()]
    lines += [
        f"| 2 shards together | {wall_two:.1f} | {cpu_two:.1f} | {rate_two:,.0f} | "
        f"{sum(r['coded'] for r in shard_summaries):,} | {sum(r['errors'] for r in shard_summaries):,} | "
        f"{sum(r['notes_per_second'] for r in shard_summaries):,.0f} |",
        "",
        f"Shard outputs together = the one-process output (as sets of lines): **{'yes' if same_lines else 'NO'}**.",
        "",
        f"Projected time for 1,000,000 notes: **{hours_two:.2f} h with 2 shards** on the 2 cores, "
        f"{hours_one:.2f} h in one process (from the wall-clock rates above); from the CPU time the 2 shards "
        f"spent per note, {hours_cpu:.2f} h on 2 cores doing nothing else.",
        "",
        "RSS in MB while coding (from the first batch recorded in the progress file to the output's rename; "
        "start and end: the first and last samples then; slope: least squares over the second half of those "
        "samples, MB per minute; flat is about 0):",
        "",
        "| process | start | median | max | end | slope MB/min | samples |",
        "|---|---|---|---|---|---|---|",
        rss_row(one),
        *(rss_row(run) for run in shards.values()),
    ]
    if kill:
        lines += [
            "",
            f"kill -9 after {kill['killed_after_s']} s ({kill['notes_recorded_at_kill']:,} notes recorded in the "
            f"progress file), then `--resume` ({kill['resume_seconds']} s): output byte-identical to the "
            f"uninterrupted run: **{'yes' if kill['identical'] else 'NO'}**.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    from medcoder.io import atomic_write_json, atomic_write_text

    atomic_write_text(args.report, text)
    atomic_write_json(args.report.with_suffix(".json"), results)
    ok = same_lines and (not kill or kill["identical"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
