"""What `medcoder serve` answers to requests it must refuse, and that it stores nothing for them.

    python bench/serve_refusals.py --model runs/codiesp-tfidf-unigram

Serves MODEL on loopback with two coders' tokens (alice, bob), a 5,000-character note limit and a
batch limit of 4, sends each bad request, and prints (and writes to bench/results/serve_refusals.md)
the status, the message, and the number of rows in the audit database before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "codiesp-tfidf-unigram")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "serve_refusals.md")
    args = parser.parse_args()

    import httpx
    from conftest import live_server

    from medcoder.serve import ServeSettings, create_app
    from medcoder.serve.audit import AuditStore
    from medcoder.serve.auth import add_token

    folder = Path(tempfile.mkdtemp(prefix="medcoder-refusals-"))
    tokens = {name: add_token(folder / "tokens.json", name) for name in ("alice", "bob")}
    audit = AuditStore(f"sqlite:///{folder / 'audit.sqlite'}")
    settings = ServeSettings(host="0.0.0.0", tokens_file=folder / "tokens.json", max_note_chars=5000, max_batch=4)
    app = create_app(args.model, settings, audit=audit)
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    decision = {"text": "Essential hypertension.", "decisions": [{"code": "I10", "action": "accept"}]}
    cases = [
        (
            "note over the limit (5,001 characters)",
            "POST",
            "/v1/code",
            {"json": {"text": "x" * 5001}, "headers": alice},
        ),
        (
            "batch over the limit (5 notes)",
            "POST",
            "/v1/code",
            {"json": {"notes": [{"text": "a"}] * 5}, "headers": alice},
        ),
        (
            "body over the limit (2 MB)",
            "POST",
            "/v1/code",
            {"content": b"x" * 2_000_000, "headers": {**alice, "content-type": "application/json"}},
        ),
        (
            "malformed JSON",
            "POST",
            "/v1/code",
            {"content": b'{"text": "chest pain"', "headers": {**alice, "content-type": "application/json"}},
        ),
        ("wrong type (text: 42)", "POST", "/v1/code", {"json": {"text": 42}, "headers": alice}),
        ("wrong type (top_k: false)", "POST", "/v1/code", {"json": {"text": "a", "top_k": False}, "headers": alice}),
        (
            "decision with an unknown code",
            "POST",
            "/v1/decisions",
            {"json": {**decision, "decisions": [{"code": "XYZ.99", "action": "accept"}]}, "headers": alice},
        ),
        (
            "decision naming another coder",
            "POST",
            "/v1/decisions",
            {"json": {**decision, "coder": "bob"}, "headers": alice},
        ),
        ("decision without a token", "POST", "/v1/decisions", {"json": decision}),
        (
            "decision with an unknown token",
            "POST",
            "/v1/decisions",
            {"json": decision, "headers": {"Authorization": "Bearer nope"}},
        ),
        ("alice reads bob's decisions", "GET", "/v1/decisions?coder=bob", {"headers": alice}),
        ("misspelt query parameter", "GET", "/v1/codes/search?q=E11&limt=5", {"headers": alice}),
    ]
    rows = []
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            while client.get("/ready").status_code != 200:
                pass
            for name, method, path, kwargs in cases:
                before = len(audit.rows())
                response = client.request(method, path, **kwargs)
                after = len(audit.rows())
                rows.append((name, response.status_code, response.json().get("error", ""), before, after))
                print(rows[-1], flush=True)
    lines = [
        "# Requests `medcoder serve` refuses",
        "",
        f"`python bench/serve_refusals.py --model {args.model}`: tokens for alice and bob, note limit 5,000 characters,",
        "batch limit 4. `stored` = rows in the audit database before -> after the request.",
        "",
        "| request | status | message | stored |",
        "|---|---|---|---|",
    ]
    for name, status, message, before, after in rows:
        lines.append(f"| {name} | {status} | {message.replace('|', '/')[:220]} | {before} -> {after} |")
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
