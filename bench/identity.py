"""One name for one saved system: the identity the audit store, a batch summary and ``/v1/model`` give a bundle.

    .venv/bin/python bench/identity.py runs/demo/model [more bundles...]

For each bundle: codes a few of its own test notes with ``medcoder predict -o`` (the summary's ``model``),
starts the service in-process, reads ``/v1/model`` and stores one decision (the audit row's ``model_version``),
then copies the bundle elsewhere and loads it again (a moved bundle keeps its identity). Prints one line each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def identities(bundle: Path, work: Path) -> dict[str, str]:
    from fastapi.testclient import TestClient

    import medcoder
    from medcoder.data.dataset import load_dataset
    from medcoder.serve.app import create_app
    from medcoder.serve.audit import AuditStore
    from medcoder.serve.settings import ServeSettings

    coder = medcoder.load(bundle)
    texts = [n.text for n in load_dataset(coder.data_config())["test"][:5]]
    notes = work / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    output = work / "codes.jsonl"
    command = [sys.executable, "-m", "medcoder.cli", "-q", "predict", str(bundle), str(notes), "-o", str(output)]
    subprocess.run(command, check=True)
    batch = json.loads(output.with_name(output.name + ".summary.json").read_text())["model"]

    audit = AuditStore(f"sqlite:///{work / 'audit.sqlite'}")
    with TestClient(create_app(bundle, ServeSettings(), audit=audit)) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.1)
        served = client.get("/v1/model").json()["version"]
        code = client.post("/v1/code", json={"text": texts[0]}).json()["notes"][0]["codes"]
        first = code[0]["code"] if code else coder.codes[0]
        decision = {"text": texts[0], "decisions": [{"code": first, "action": "accept"}]}
        client.post("/v1/decisions", json=decision).raise_for_status()
    stored = audit.rows()[0]["model_version"]
    audit.close()
    moved = work / "moved" / "elsewhere"
    shutil.copytree(bundle, moved)
    return {
        "Coder.identity": coder.identity,
        "batch summary": batch,
        "/v1/model": served,
        "audit row": stored,
        "moved copy": medcoder.load(moved).identity,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args()
    same = True
    for bundle in args.bundles:
        with tempfile.TemporaryDirectory() as work:
            found = identities(bundle, Path(work))
        one = len(set(found.values())) == 1
        same &= one
        print(f"{bundle}: " + "; ".join(f"{k} {v}" for k, v in found.items()) + ("" if one else "  DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
