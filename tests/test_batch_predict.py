"""Batch prediction (``medcoder predict`` on a stream): error records, --strict, --shard, Parquet, kill -9 and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TrainedRun

from medcoder import load
from medcoder.data.synthetic import SyntheticSource, generate_notes
from medcoder.errors import MedcoderError
from medcoder.inference.base import Capabilities
from medcoder.inference.batch import parse_shard, run_batch
from medcoder.inference.inputs import PredictionInputs


def note_texts(n: int) -> list[str]:
    """``n`` synthetic note texts (a seed the model was not trained on), cycled."""
    texts = [note.text for note in generate_notes(SyntheticSource(n_notes=100, n_codes=20, seed=11))]
    return [texts[i % len(texts)] for i in range(n)]


def write_notes(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(note_texts(n))))
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_mixed_bad_records_get_error_records_in_place_and_are_counted(
    cli, synthetic_run: TrainedRun, tmp_path: Path
) -> None:
    good = note_texts(4)
    rows = [
        json.dumps({"id": "g0", "text": good[0]}).encode(),
        json.dumps({"id": "empty", "text": ""}).encode(),
        json.dumps({"id": "blank", "text": " \n\t "}).encode(),
        json.dumps({"id": "g1", "text": good[1]}).encode(),
        b"",  # a blank line: skipped, no record
        json.dumps({"id": "number", "text": 42}).encode(),
        json.dumps({"id": {"nested": 1}, "text": good[2]}).encode(),
        b'{"id": "broken", "text": "no end',
        b'{"id": "latin1", "text": "caf\xe9"}',
        json.dumps({"id": "g2", "text": good[3]}).encode(),
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b"\n".join(rows) + b"\n")
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"id": f"g{i}", "text": good[j]}) + "\n" for i, j in enumerate((0, 1, 3))))

    out = tmp_path / "out.jsonl"
    result = cli("predict", synthetic_run.bundle, data, "-o", out)
    assert result.code == 0, result.err
    expected_clean = tmp_path / "clean_out.jsonl"
    assert cli("predict", synthetic_run.bundle, clean, "-o", expected_clean).code == 0

    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    bad_byte = sum(len(row) + 1 for row in rows[:8]) + rows[8].index(b"\xe9")  # its offset in the file
    assert [r["id"] for r in records] == [
        "g0",
        "empty",
        "blank",
        "g1",
        "number",
        "mixed.jsonl:7",  # an id that cannot be read: FILE:LINE
        "mixed.jsonl:8",
        "mixed.jsonl:9",
        "g2",
    ]
    # the good notes' lines are exactly those of the same notes coded alone
    assert [lines[i] for i in (0, 3, 8)] == expected_clean.read_text(encoding="utf-8").splitlines()
    errors = [r for r in records if "error" in r]
    assert errors == [
        {"id": "empty", "error": "text is empty or whitespace", "kind": "empty_text", "source": f"{data}:2"},
        {"id": "blank", "error": "text is empty or whitespace", "kind": "empty_text", "source": f"{data}:3"},
        {"id": "number", "error": "expected a string, found number", "kind": "wrong_type", "source": f"{data}:6"},
        {
            "id": "mixed.jsonl:7",
            "error": "expected a string or integer id, found object",
            "kind": "wrong_type",
            "source": f"{data}:7",
        },
        {
            "id": "mixed.jsonl:8",
            "error": "malformed JSON: Unterminated string starting at (column 26)",
            "kind": "malformed_json",
            "source": f"{data}:8",
        },
        {
            "id": "mixed.jsonl:9",
            "error": f"not valid UTF-8 (byte 0xe9 at offset {bad_byte})",
            "kind": "not_utf8",
            "source": f"{data}:9",
        },
    ]
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["notes_read"] == 9 and summary["coded"] == 3 and summary["errors"] == 6
    assert summary["errors_by_kind"] == {"empty_text": 2, "malformed_json": 1, "not_utf8": 1, "wrong_type": 2}
    assert summary["records_in_inputs"] == 9 and summary["output_bytes"] == out.stat().st_size
    said = " ".join(result.err.split())
    assert "9 notes read: 3 coded, 6 errors (empty_text 2, malformed_json 1, not_utf8 1, wrong_type 2)" in said
    # the run left only the output and its summary
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out.")) == [
        "out.jsonl",
        "out.jsonl.summary.json",
    ]


def test_strict_stops_at_the_first_bad_record(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    data = write_notes(tmp_path / "notes.jsonl", 3)
    with data.open("a") as handle:
        handle.write(json.dumps({"id": "n3", "text": "   "}) + "\n")
        handle.write(json.dumps({"id": "n4", "text": 7}) + "\n")
    out = tmp_path / "out.jsonl"
    result = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--strict")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"error: {data}:4: record 'n3': field 'text': text is empty or whitespace",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]  # nothing written, nothing to resume


def test_shards_together_are_the_unsharded_output(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    first = write_notes(tmp_path / "a.jsonl", 7)
    with first.open("a") as handle:
        handle.write('{"id": "bad", "text": ""}\n\n')
    second = tmp_path / "b.txt"  # a text file: one note, one record
    second.write_text(note_texts(1)[0])
    inputs = [first, second, write_notes(tmp_path / "c.jsonl", 5)]
    whole = tmp_path / "whole.jsonl"
    assert cli("-q", "predict", synthetic_run.bundle, *inputs, "-o", whole).code == 0
    whole_lines = whole.read_text().splitlines()
    assert len(whole_lines) == 14

    shards = []
    for i in range(3):
        out = tmp_path / f"shard{i}.jsonl"
        result = cli("-q", "predict", synthetic_run.bundle, *inputs, "-o", out, "--shard", f"{i}/3")
        assert result.code == 0, result.err
        shards.append(out.read_text().splitlines())
        summary = json.loads((tmp_path / f"shard{i}.jsonl.summary.json").read_text())
        assert (summary["shard"], summary["records_in_inputs"]) == (f"{i}/3", 14)
    # record k (0-based over all inputs, the bad one and the text file included) is in shard k mod 3
    for i, lines in enumerate(shards):
        assert lines == whole_lines[i::3]
    assert sorted(line for lines in shards for line in lines) == sorted(whole_lines)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2/2", "--shard 2/2: I must be 0 to N-1"),
        ("0/0", "--shard 0/0: I must be 0 to N-1 and N at least 1"),
        ("a/b", "--shard must be I/N"),
        ("-1/2", "--shard must be I/N"),
    ],
)
def test_shard_flag_is_checked(cli, synthetic_run: TrainedRun, tmp_path: Path, value: str, message: str) -> None:
    data = write_notes(tmp_path / "notes.jsonl", 2)
    result = cli("-q", "predict", synthetic_run.bundle, data, "--shard", value)
    assert result.code == 2 and result.out == ""
    assert len(result.err.splitlines()) == 1 and message in result.err
    assert parse_shard(" 3 / 4 ") == (3, 4)


def test_parquet_gives_the_results_of_the_same_notes_in_jsonl(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = note_texts(9)
    texts[4] = "  "  # a bad row: an error record in both
    ids = [f"p{i}" for i in range(9)]
    table = pa.table({"note_id": ids, "body": texts, "other": list(range(9))})
    pq.write_table(table, tmp_path / "notes.parquet", row_group_size=4)
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text("".join(json.dumps({"note_id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    fields = ["--id-field", "note_id", "--text-field", "body", "--top-k", "3"]
    assert (
        cli("-q", "predict", synthetic_run.bundle, tmp_path / "notes.parquet", "-o", tmp_path / "pq.out", *fields).code
        == 0
    )
    assert cli("-q", "predict", synthetic_run.bundle, jsonl, "-o", tmp_path / "jl.out", *fields).code == 0
    from_parquet, from_jsonl = lines_of(tmp_path / "pq.out"), lines_of(tmp_path / "jl.out")
    assert [r["id"] for r in from_parquet] == ids
    assert from_parquet[4]["source"] == f"{tmp_path / 'notes.parquet'}:5"  # FILE:ROW, 1-based
    for record in (from_parquet[4], from_jsonl[4]):
        del record["source"]
    assert from_parquet == from_jsonl
    assert sum("codes" in r for r in from_parquet) == 8

    missing = cli("-q", "predict", synthetic_run.bundle, tmp_path / "notes.parquet")
    assert missing.code == 2
    assert f"{tmp_path / 'notes.parquet'}: field 'text': no such column (the file has: body, note_id, other)" in (
        missing.err
    )
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    fake = cli("-q", "predict", synthetic_run.bundle, tmp_path / "fake.parquet")
    assert fake.code == 2 and f"{tmp_path / 'fake.parquet'}: not a readable Parquet file" in fake.err


def test_kill_9_then_resume_gives_the_uninterrupted_output(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    data = write_notes(tmp_path / "notes.jsonl", 600)
    args = (synthetic_run.bundle, data, "--batch-size", "2", "--top-k", "2")
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    state = tmp_path / "cut.jsonl.progress.json"
    command = [sys.executable, "-m", "medcoder.cli", "-q", "predict", *map(str, args), "-o", str(cut)]
    proc = subprocess.Popen([*command, "--checkpoint-every", "0"], stderr=subprocess.PIPE)
    try:
        recorded = 0
        deadline = time.monotonic() + 120
        while recorded < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            try:
                recorded = json.loads(state.read_text())["records"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
        busy = cli("-q", "predict", *args, "-o", cut, "--resume")  # while it runs
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()  # type: ignore[union-attr]
    assert 20 <= recorded < 600 and not cut.exists()  # killed part-way: only OUT.partial and the progress file
    assert busy.code == 2 and "another process is writing it (give each shard its own --output)" in busy.err
    saved = json.loads(state.read_text())
    assert (tmp_path / "cut.jsonl.partial").stat().st_size >= saved["output_bytes"]

    resumed = cli("-q", "predict", *args, "-o", cut, "--resume")
    assert resumed.code == 0, resumed.err
    assert cli("-q", "predict", *args, "-o", whole).code == 0
    assert cut.read_bytes() == whole.read_bytes()
    assert len(cut.read_text().splitlines()) == 600
    summary = json.loads((tmp_path / "cut.jsonl.summary.json").read_text())
    assert summary["notes_read"] == summary["coded"] == 600 and summary["resumed_at"] == saved["summary"]["notes_read"]
    assert not state.exists() and not (tmp_path / "cut.jsonl.partial").exists()


def _interrupted_run(coder, inputs: PredictionInputs, out: Path, after_notes: int, **options) -> None:
    """Run a batch that stops (as on Ctrl-C) once ``after_notes`` notes are written."""

    def stop(progress) -> None:
        if progress.notes >= after_notes:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(coder, inputs, out, progress=stop, checkpoint_seconds=0, **options)


def test_resume_cuts_a_batch_written_after_the_last_checkpoint_and_refuses_other_settings(
    cli, synthetic_run: TrainedRun, tmp_path: Path
) -> None:
    coder = load(synthetic_run.bundle)
    data = write_notes(tmp_path / "notes.jsonl", 40)
    inputs = PredictionInputs((data,))
    whole = tmp_path / "whole.jsonl"
    run_batch(coder, inputs, whole, batch_size=4)
    out = tmp_path / "out.jsonl"
    _interrupted_run(coder, inputs, out, 12, batch_size=4)
    saved = json.loads((tmp_path / "out.jsonl.progress.json").read_text())
    assert (saved["records"], saved["summary"]["notes_read"]) == (12, 12)
    partial = tmp_path / "out.jsonl.partial"
    assert partial.read_bytes() == whole.read_bytes()[: saved["output_bytes"]]
    with partial.open("ab") as handle:  # a kill between the output write and the progress write
        handle.write(b'{"id": "n12", "codes": [{"code": "I1')

    again = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "4")
    assert again.code == 2 and "pass --resume to continue it, or --overwrite to start over" in again.err
    refusals = {
        ("--top-k", "3"): "top_k 0 then, 3 now",
        ("--batch-size", "8"): "batch_size 4 then, 8 now",
        ("--shard", "0/2"): "shard '0/1' then, '0/2' now",
        ("--text-field", "body"): "text_field 'text' then, 'body' now",
    }
    for extra, difference in refusals.items():
        result = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "4", "--resume", *extra)
        assert result.code == 2 and difference in result.err and "--overwrite" in result.err, result.err
    lines = data.read_text().splitlines()
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join([lines[0], json.dumps({"id": "n1", "text": "other"}), *lines[2:]]) + "\n")
    changed.replace(data)  # same path, a record already coded changed
    result = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "4", "--resume")
    assert result.code == 2 and "the first 12 records of the inputs differ" in result.err
    write_notes(data, 40)  # the original back
    result = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "4", "--resume")
    assert result.code == 0, result.err
    assert out.read_bytes() == whole.read_bytes()
    again = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "4", "--resume")
    assert again.code == 0 and out.read_bytes() == whole.read_bytes()  # complete already: nothing to do

    # --overwrite starts an interrupted run over
    _interrupted_run(coder, inputs, out, 8, batch_size=4)
    result = cli("-q", "predict", synthetic_run.bundle, data, "-o", out, "--batch-size", "8", "--overwrite")
    assert result.code == 0, result.err
    assert out.read_bytes() == whole.read_bytes()
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["resumed_at"] is None


class _Poisoned:
    """A coder that fails on any batch holding a note with 'POISON' (or on every note: ``broken``)."""

    kind = "test"
    path = None
    identity = "poisoned@000000000000"
    capabilities = Capabilities(explain=True)

    def __init__(self, coder, *, broken: bool = False) -> None:
        self.coder = coder
        self.broken = broken
        self.calls: list[int] = []

    def predict(self, texts, **kwargs):
        self.calls.append(len(texts))
        if self.broken or any("POISON" in t for t in texts):
            raise ValueError("tokenizer blew up")
        return self.coder.predict(texts, **kwargs)


def test_a_note_that_breaks_its_batch_is_retried_alone(synthetic_run: TrainedRun, tmp_path: Path) -> None:
    texts = note_texts(6)
    texts[2] = "POISON " + texts[2]
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    coder = _Poisoned(load(synthetic_run.bundle))
    summary = run_batch(coder, PredictionInputs((data,)), tmp_path / "out.jsonl", batch_size=3)
    assert coder.calls == [3, 1, 1, 1, 3]  # the first batch failed, then its notes one by one
    records = lines_of(tmp_path / "out.jsonl")
    assert ["codes" in r for r in records] == [True, True, False, True, True, True]
    assert records[2] == {
        "id": "n2",
        "error": "could not be coded: tokenizer blew up",
        "kind": "coding_failed",
        "source": f"{data}:3",
    }
    assert (summary.coded, summary.errors_by_kind) == (5, {"coding_failed": 1})

    broken = _Poisoned(load(synthetic_run.bundle), broken=True)  # every note fails: the system is broken
    with pytest.raises(ValueError, match="tokenizer blew up"):
        run_batch(broken, PredictionInputs((data,)), tmp_path / "broken.jsonl", batch_size=3)
    assert not (tmp_path / "broken.jsonl.partial").exists()


def test_run_batch_checks_its_options(synthetic_run: TrainedRun, tmp_path: Path) -> None:
    coder = load(synthetic_run.bundle)
    inputs = PredictionInputs((write_notes(tmp_path / "notes.jsonl", 2),))
    with pytest.raises(MedcoderError, match="--resume needs --output"):
        run_batch(coder, inputs, None, resume=True)
    with pytest.raises(MedcoderError, match="exclude each other"):
        run_batch(coder, inputs, tmp_path / "o.jsonl", resume=True, overwrite=True)
    with pytest.raises(MedcoderError, match="a folder; give the JSONL file to write"):
        run_batch(coder, inputs, tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(MedcoderError, match="no notes to code"):
        run_batch(coder, PredictionInputs((empty,)), tmp_path / "o.jsonl")
    assert list(tmp_path.glob("o.jsonl*")) == []
