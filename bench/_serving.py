"""`medcoder serve` as its own process for a benchmark: a free loopback port, ready before use, stopped after."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve_process(model: Path, *options: str, ready_within: float = 600) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yield (base URL, process) of `medcoder serve MODEL OPTIONS...` once `/ready` answers 200.

    The audit database and the server's log (stderr) go to a temporary folder: a log sent to a pipe
    nobody reads stalls the server once the pipe is full.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="medcoder-bench-serve-"))
    command = [str(ROOT / ".venv" / "bin" / "medcoder"), "serve", str(model), "--port", str(port)]
    command += ["--db", f"sqlite:///{folder / 'audit.sqlite'}", *options]
    base = f"http://127.0.0.1:{port}"
    with open(folder / "serve.log", "w") as log:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + ready_within
            while True:
                if server.poll() is not None:
                    sys.exit(f"the server stopped: see {log.name}")
                try:
                    if httpx.get(base + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"the server was not ready after {ready_within:g} s: see {log.name}")
                time.sleep(0.5)
            yield base, server
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
