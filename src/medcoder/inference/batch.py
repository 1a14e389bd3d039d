"""Batch prediction over inputs of any size: streamed, resumable after a kill, shardable over workers.

:func:`run_batch` reads the records of :class:`~medcoder.inference.inputs.PredictionInputs`
as a stream, codes them ``batch_size`` records at a time and writes one JSON
line per record in input order: the prediction of a good note, or an error
record ``{"id", "error", "kind", "source"}`` for one that cannot be coded
(``--strict``: the first bad record stops the batch instead). Memory holds
one batch, however large the input.

Written to a file ``OUT``, the lines go to ``OUT.partial`` as each batch is
done (flushed and fsynced), then ``OUT.progress.json`` is replaced atomically:
the records read so far, a SHA-256 of them, the partial output's length, the
counts, and what the run was started with (inputs, shard, model, options).
After a kill (even ``kill -9``) the same command with ``--resume`` checks
that all of that still holds, cuts the partial output back to its recorded
length (a kill between the two writes leaves a batch too many), skips the
records already read and goes on: the output ends byte-identical to a run
never interrupted. At the end the summary goes to ``OUT.summary.json``, the
partial output is renamed to ``OUT`` and the progress file removed, so ``OUT``
only ever appears complete.

``shard=(I, N)`` keeps the records whose 0-based position among all records
of all inputs (good or bad) is I modulo N: N workers with the same inputs
code disjoint parts that together are the whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from medcoder.errors import InputError, MedcoderError
from medcoder.inference.base import Coder, NotePrediction
from medcoder.inference.inputs import InputRecord, PredictionInputs
from medcoder.io import atomic_write_json, read_json_file

logger = logging.getLogger("medcoder")

STATE_FORMAT = "medcoder.predict-progress.v1"
SUMMARY_FORMAT = "medcoder.predict-summary.v1"
CODING_FAILED = "coding_failed"
DEFAULT_BATCH_SIZE = 256
_LOG_INTERVAL = 60.0  # seconds between progress log lines when no progress callback is given


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``, 0-based: ``0/4`` is the first of four shards."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise MedcoderError(f"--shard must be I/N (shard I of N, 0-based: 0/4 ... 3/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise MedcoderError(f"--shard {text}: I must be 0 to N-1 and N at least 1 (0-based: 0/4 ... 3/4)")
    return index, count


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress.json")


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def summary_path(output: Path) -> Path:
    return output.with_name(output.name + ".summary.json")


@dataclass
class Summary:
    """What a batch did: notes read (this shard's records, good and bad), coded, errors by kind, time."""

    shard: str = "0/1"
    output: str | None = None
    model: str | None = None  # the identity of the system that coded them (Coder.identity)
    notes_read: int = 0
    coded: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # coding time over all sessions of a resumed run
    records_in_inputs: int = 0  # records of every shard
    resumed_at: int | None = None  # notes already done when this session resumed (None: not resumed)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def notes_per_second(self) -> float:
        return self.notes_read / self.seconds if self.seconds > 0 else 0.0

    def count(self, kind: str | None = None) -> None:
        """One more record done: coded (``kind`` None) or an error record of ``kind``."""
        self.notes_read += 1
        if kind is None:
            self.coded += 1
        else:
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SUMMARY_FORMAT,
            "shard": self.shard,
            "output": self.output,
            "model": self.model,
            "notes_read": self.notes_read,
            "coded": self.coded,
            "errors": self.errors,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "seconds": round(self.seconds, 3),
            "notes_per_second": round(self.notes_per_second, 1),
            "records_in_inputs": self.records_in_inputs,
            "resumed_at": self.resumed_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        return cls(
            shard=str(data.get("shard", "0/1")),
            output=data.get("output"),
            model=data.get("model"),
            notes_read=int(data.get("notes_read", 0)),
            coded=int(data.get("coded", 0)),
            errors_by_kind={str(k): int(v) for k, v in dict(data.get("errors_by_kind", {})).items()},
            seconds=float(data.get("seconds", 0.0)),
            records_in_inputs=int(data.get("records_in_inputs", 0)),
            resumed_at=data.get("resumed_at"),
        )

    def line(self) -> str:
        """The summary in one line, for the end of a run."""
        shard = "" if self.shard == "0/1" else f" (shard {self.shard} of {self.records_in_inputs:,} records)"
        errors = f"{self.errors:,} error{'' if self.errors == 1 else 's'}"
        if self.errors:
            errors += " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(self.errors_by_kind.items())) + ")"
        resumed = "" if self.resumed_at is None else f"; resumed after {self.resumed_at:,}"
        model = "" if self.model is None else f"; model {self.model}"
        return (
            f"{self.notes_read:,} notes read{shard}: {self.coded:,} coded, {errors}; "
            f"{self.seconds:.1f} s, {self.notes_per_second:,.0f} notes/s{resumed}{model}"
        )


@dataclass(frozen=True)
class BatchProgress:
    """Where a running batch is, after each batch written."""

    notes: int  # this shard's records done (coded or error records), sessions before a resume included
    bytes_read: int  # of the inputs (Parquet: estimated from rows)
    bytes_total: int | None  # None when reading stdin
    seconds: float  # this session
    session_notes: int  # records done in this session

    @property
    def notes_per_second(self) -> float:
        return self.session_notes / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------ sinks
class _Stdout:
    """Lines to stdout, flushed after every batch; no resume."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def append(self, text: str, **_: Any) -> None:
        self.stream.write(text)
        self.stream.flush()


class _OutputFile:
    """``OUT.partial`` + ``OUT.progress.json`` while running; ``OUT`` + ``OUT.summary.json`` once done."""

    def __init__(self, output: Path, run: dict[str, Any]) -> None:
        self.output = output
        self.partial = partial_path(output)
        self.state = progress_path(output)
        self.summary_file = summary_path(output)
        self.run = run
        self.handle: Any = None
        self.size = 0
        self.fresh = True
        self._mark: dict[str, Any] | None = None  # the progress of the last batch written

    # ---------------------------------------------------------------- start
    def open(self, *, resume: bool, overwrite: bool) -> dict[str, Any] | Summary | None:
        """The saved progress to resume from (None: start afresh; a Summary: the run was already complete)."""
        if self.output.is_dir():
            raise MedcoderError(f"--output {self.output}: a folder; give the JSONL file to write")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if _locked(self.partial):
            raise MedcoderError(f"{self.output}: another process is writing it (give each shard its own --output)")
        if self.state.exists():
            if not resume and not overwrite:
                raise MedcoderError(
                    f"{self.output}: an interrupted run left {self.state.name} beside it; "
                    "pass --resume to continue it, or --overwrite to start over"
                )
            if resume:
                return self._resume()
            self.state.unlink()
        elif resume:
            done = self._already_complete()
            if done is not None:
                return done
            logger.info("%s: no interrupted run to resume; starting from the first note", self.output)
        self._lock(truncate_to=0)
        self._mark = {
            "records": 0,
            "input_sha256": hashlib.sha256().hexdigest(),
            "summary": Summary(shard=self.run["shard"], model=self.run["model"]).to_dict(),
        }
        self.checkpoint()
        return None

    def _resume(self) -> dict[str, Any] | Summary:
        saved = read_json_file(self.state)
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise InputError(f"not a progress file of medcoder predict ({STATE_FORMAT})", path=self.state)
        try:
            records, digest, size = int(saved["records"]), str(saved["input_sha256"]), int(saved["output_bytes"])
            run = dict(saved["run"])
            Summary.from_dict(dict(saved["summary"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"incomplete progress file ({exc})", path=self.state) from None
        differences = [
            f"{key} {run.get(key)!r} then, {self.run[key]!r} now" for key in self.run if run.get(key) != self.run[key]
        ]
        if differences:
            raise MedcoderError(
                f"--resume: {self.output} was begun with other settings ({'; '.join(differences)}); "
                "run the same command to resume, or pass --overwrite to start over"
            )
        if saved.get("complete") and not self.partial.exists() and self.output.is_file():
            if self.output.stat().st_size == size:  # killed after the rename: only the progress file is left
                self.state.unlink()
                return Summary.from_dict(saved["summary"])
        if not self.partial.is_file() or self.partial.stat().st_size < size:
            raise MedcoderError(
                f"--resume: {self.partial} is missing or shorter than the {size:,} bytes recorded in "
                f"{self.state.name}; it was changed since: start over with --overwrite"
            )
        self._lock(truncate_to=size)  # bytes past the recorded length: a batch written before the kill recorded it
        self.fresh = False
        logger.info("%s: resuming after %s records read (%s bytes written)", self.output, f"{records:,}", f"{size:,}")
        return {"records": records, "digest": digest, "summary": Summary.from_dict(saved["summary"])}

    def _already_complete(self) -> Summary | None:
        """The summary of a finished run of these settings whose output is still there (None: none)."""
        if not (self.summary_file.is_file() and self.output.is_file()):
            return None
        try:
            saved = read_json_file(self.summary_file)
        except MedcoderError:
            return None
        if not isinstance(saved, dict) or saved.get("format") != SUMMARY_FORMAT or saved.get("run") != self.run:
            return None
        if saved.get("output_bytes") != self.output.stat().st_size:
            return None
        logger.info("%s: already complete (%s); nothing to resume", self.output, self.summary_file.name)
        return Summary.from_dict(saved)

    def _lock(self, truncate_to: int) -> None:
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o666)
        self.handle = os.fdopen(fd, "r+b")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.handle.close()
                raise MedcoderError(
                    f"{self.output}: another process is writing it (give each shard its own --output)"
                ) from None
        self.handle.truncate(truncate_to)
        self.handle.seek(truncate_to)
        self.size = truncate_to

    # ---------------------------------------------------------------- write
    def append(self, text: str, *, records: int, digest: str, summary: Summary) -> None:
        """Write one batch's lines (to the OS: a killed process loses nothing) and remember where it ends."""
        data = text.encode("utf-8")
        self.handle.write(data)
        self.handle.flush()
        self.size += len(data)
        self._mark = {"records": records, "input_sha256": digest, "summary": summary.to_dict()}

    def checkpoint(self) -> None:
        """Make the lines written so far durable (fsync), then record them in the progress file."""
        if self._mark is None or self.handle is None:
            return
        os.fsync(self.handle.fileno())
        self._write_state(**self._mark)

    def _write_state(self, *, records: int, input_sha256: str, summary: dict[str, Any], complete: bool = False) -> None:
        atomic_write_json(
            self.state,
            {
                "format": STATE_FORMAT,
                "run": self.run,
                "records": records,
                "input_sha256": input_sha256,
                "output_bytes": self.size,
                "summary": summary,
                "complete": complete,
            },
        )

    def finish(self, summary: Summary, *, records: int, digest: str) -> None:
        os.fsync(self.handle.fileno())
        self._write_state(records=records, input_sha256=digest, summary=summary.to_dict(), complete=True)
        atomic_write_json(self.summary_file, {**summary.to_dict(), "run": self.run, "output_bytes": self.size})
        os.replace(self.partial, self.output)
        _fsync_folder(self.output.parent)
        self.state.unlink()
        self.close()

    def abandon(self) -> None:
        """Remove what a fresh run wrote (nothing was coded); a resumed run keeps its progress."""
        self.close()
        if self.fresh:
            for path in (self.partial, self.state):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _locked(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` (a run writing it); False where there is no flock."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------- coding
def _error_line(record: InputRecord, message: str, kind: str) -> str:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return json.dumps({"id": record.id, "error": message, "kind": kind, "source": record.source}, ensure_ascii=False)


def _prediction_line(prediction: NotePrediction) -> str:
    return json.dumps(prediction.to_dict(), ensure_ascii=False)


class _Batcher:
    """Codes one batch of records and turns it into output lines, in input order."""

    def __init__(self, coder: Coder, *, top_k: int, explain: bool, strict: bool, pairs: bool) -> None:
        self.coder = coder
        self.top_k = top_k
        self.explain = explain
        self.strict = strict
        self.pairs = pairs

    def _predict(self, records: Sequence[InputRecord]) -> list[NotePrediction]:
        return self.coder.predict(
            [r.text for r in records],  # type: ignore[misc]
            ids=[r.id for r in records],
            pairs=[r.pair for r in records] if self.pairs else None,  # type: ignore[misc]
            top_k=self.top_k,
            explain=self.explain,
        )

    def code(self, batch: Sequence[InputRecord], summary: Summary) -> str:
        good = [r for r in batch if r.error is None]
        results: dict[int, NotePrediction | Exception] = {}
        if good:
            try:
                results = dict(zip((r.ordinal for r in good), self._predict(good), strict=True))
            except MemoryError:
                raise
            except Exception as exc:  # one note may have broken the batch: code them one by one
                results = self._one_by_one(good, exc)
        lines = []
        for record in batch:
            if record.error is not None:
                lines.append(_error_line(record, record.error, record.kind or "bad_record"))
                summary.count(record.kind or "bad_record")
                continue
            result = results[record.ordinal]
            if isinstance(result, Exception):
                lines.append(_error_line(record, f"could not be coded: {result}", CODING_FAILED))
                summary.count(CODING_FAILED)
            else:
                lines.append(_prediction_line(result))
                summary.count()
        return "".join(line + "\n" for line in lines)

    def _one_by_one(self, good: Sequence[InputRecord], first: Exception) -> dict[int, NotePrediction | Exception]:
        if len(good) > 1:
            logger.warning("coding a batch of %d notes failed (%s); coding them one by one", len(good), first)
        results: dict[int, NotePrediction | Exception] = {}
        for record in good:
            try:
                (results[record.ordinal],) = self._predict([record])
            except MemoryError:
                raise
            except Exception as exc:
                if self.strict:
                    raise InputError(
                        f"could not be coded: {exc}", path=record.path, line=record.line, record=record.id
                    ) from exc
                results[record.ordinal] = exc
        if len(good) > 1 and all(isinstance(r, Exception) for r in results.values()):
            raise first  # every note fails alone too: the system is broken, not the notes
        return results


# -------------------------------------------------------------------- run
def run_batch(
    coder: Coder,
    inputs: PredictionInputs,
    output: Path | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = 0,
    explain: bool = False,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    progress: Callable[[BatchProgress], None] | None = None,
    checkpoint_seconds: float = 1.0,
    stdout: TextIO | None = None,
) -> Summary:
    """Code every record of ``inputs`` (this ``shard``'s) into ``output`` (None: stdout); see the module docstring.

    The progress file is updated at most every ``checkpoint_seconds`` (0:
    after every batch), each time after an fsync of the output: a kill loses
    at most that much work, which ``--resume`` does again.

    Raises ``MedcoderError`` on what stops the whole batch: unreadable inputs,
    a resume whose settings or inputs differ, the first bad record with
    ``strict``, inputs without a single record.
    """
    if batch_size < 1:
        raise MedcoderError(f"--batch-size must be at least 1, got {batch_size}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise MedcoderError(f"shard {index}/{count}: I must be 0 to N-1")
    if resume and overwrite:
        raise MedcoderError("--resume and --overwrite exclude each other")
    if resume and output is None:
        raise MedcoderError("--resume needs --output: a run written to stdout cannot be resumed")
    inputs.check()
    if explain and not coder.capabilities.explain:
        raise MedcoderError(coder.capabilities.why_not_explain)
    shard_name = f"{index}/{count}"
    run = {
        **inputs.options(),
        "shard": shard_name,
        "model": coder.identity,
        "top_k": top_k,
        "explain": explain,
        "batch_size": batch_size,  # a batch's padding can move a neural model's scores in the last digits
    }
    sink: _OutputFile | _Stdout
    summary = Summary(shard=shard_name, output=None if output is None else str(output), model=coder.identity)
    skip, skip_digest = 0, None
    if output is None:
        sink = _Stdout(stdout or sys.stdout)
    else:
        sink = _OutputFile(output, run)
        saved = sink.open(resume=resume, overwrite=overwrite)
        if isinstance(saved, Summary):
            return saved
        if saved is not None:
            skip, skip_digest = saved["records"], saved["digest"]
            summary = saved["summary"]
            summary.output = str(output)
            summary.resumed_at = summary.notes_read
    try:
        return _run(
            coder, inputs, sink, summary, batch_size=batch_size, shard=shard, skip=skip, skip_digest=skip_digest,
            batcher=_Batcher(coder, top_k=top_k, explain=explain, strict=strict, pairs=inputs.pair_field is not None),
            strict=strict, progress=progress, checkpoint_seconds=checkpoint_seconds,
        )  # fmt: skip
    except BaseException:
        if isinstance(sink, _OutputFile):
            if summary.notes_read == 0 and skip == 0:
                sink.abandon()
            else:  # the progress so far stays: --resume goes on after the last batch written
                with contextlib.suppress(OSError):
                    sink.checkpoint()
                sink.close()
        raise


def _run(
    coder: Coder,
    inputs: PredictionInputs,
    sink: _OutputFile | _Stdout,
    summary: Summary,
    *,
    batch_size: int,
    shard: tuple[int, int],
    skip: int,
    skip_digest: str | None,
    batcher: _Batcher,
    strict: bool,
    progress: Callable[[BatchProgress], None] | None,
    checkpoint_seconds: float,
) -> Summary:
    stream = inputs.open(shard=shard, skip=skip, skip_digest=skip_digest)
    total_bytes = inputs.total_bytes()
    start = time.perf_counter()
    seconds_before, notes_before = summary.seconds, summary.notes_read
    last_log = last_checkpoint = start

    def flush(batch: list[InputRecord]) -> None:
        nonlocal last_log, last_checkpoint
        text = batcher.code(batch, summary)
        now = time.perf_counter()
        summary.seconds = seconds_before + (now - start)
        summary.records_in_inputs = stream.records_read
        sink.append(text, records=stream.records_read, digest=stream.digest(), summary=summary)
        if isinstance(sink, _OutputFile) and now - last_checkpoint >= checkpoint_seconds:
            sink.checkpoint()
            last_checkpoint = now
        state = BatchProgress(
            summary.notes_read, stream.bytes_read, total_bytes, now - start, summary.notes_read - notes_before
        )
        if progress is not None:
            progress(state)
        elif now - last_log >= _LOG_INTERVAL:
            last_log = now
            share = f" ({100 * state.bytes_read / total_bytes:.0f}% of the input read)" if total_bytes else ""
            logger.info(
                "coding notes: %s done%s, %.0f notes/s", f"{summary.notes_read:,}", share, state.notes_per_second
            )

    batch: list[InputRecord] = []
    for record in stream:
        if strict and record.error is not None:
            raise record.input_error()
        batch.append(record)
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if stream.records_read == 0:
        raise MedcoderError("no notes to code: the inputs hold no records")
    summary.records_in_inputs = stream.records_read
    summary.seconds = seconds_before + (time.perf_counter() - start)
    if isinstance(sink, _OutputFile):
        sink.finish(summary, records=stream.records_read, digest=stream.digest())
    return summary
