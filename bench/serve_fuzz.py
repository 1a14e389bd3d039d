"""Schemathesis against a live `medcoder serve`: every operation, valid and invalid generated requests.

    python bench/serve_fuzz.py --model runs/codiesp-tfidf-unigram --examples 100

Starts the server on a free loopback port (no tokens: the schema then asks for none; the token paths,
401 and 403, are tested in tests/test_serve.py), then for
each operation of /openapi.json and each generation mode (positive: requests the schema allows;
negative: requests it forbids) runs up to --examples cases through the checks below and counts the
cases run, server errors (5xx) and schema violations (status code, content type, headers or body not
as documented; invalid data accepted). Writes bench/results/serve_fuzz.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import schemathesis
from _serving import serve_process
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks

ROOT = Path(__file__).resolve().parents[1]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def _fuzzer(operation, mode: str, base: str, examples: int, statuses: Counter, failures: list[str]):
    """A Hypothesis test of ``operation`` that counts statuses and keeps every failure (the run goes on)."""

    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        try:
            response = case.call(base_url=base)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            failures.append(" ".join(str(exc).split())[:600])

    return fuzz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "codiesp-tfidf-unigram")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "serve_fuzz.md")
    args = parser.parse_args()

    rows = []
    with serve_process(args.model) as (base, _):
        schema = schemathesis.openapi.from_url(base + "/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in ("positive", "negative"):
                statuses: Counter = Counter()
                failures: list[str] = []
                fuzz = _fuzzer(operation, mode, base, args.examples, statuses, failures)
                try:
                    fuzz()
                except Unsatisfiable:
                    rows.append((operation.label, mode, 0, {}, ["no invalid input exists (the operation takes none)"]))
                    continue
                rows.append((operation.label, mode, sum(statuses.values()), dict(statuses), failures))
                print(json.dumps(rows[-1]), flush=True)

    cases = sum(r[2] for r in rows)
    server_errors = sum(n for r in rows for status, n in r[3].items() if status >= 500 and status not in (503, 504))
    violations = sum(len(r[4]) for r in rows if r[2])
    lines = [
        "# Schemathesis against `medcoder serve`",
        "",
        f"`python bench/serve_fuzz.py --model {args.model} --examples {args.examples}`, {time.strftime('%Y-%m-%d')}, "
        f"schemathesis {schemathesis.__version__ if hasattr(schemathesis, '__version__') else ''}. Checks: "
        + ", ".join(c.__name__ for c in CHECKS)
        + ".",
        "",
        f"**{cases} cases, {server_errors} server errors, {violations} schema violations.**",
        "",
        "| operation | mode | cases | statuses | failures |",
        "|---|---|---|---|---|",
    ]
    for label, mode, n, statuses, failures in rows:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        lines.append(f"| `{label}` | {mode} | {n} | {shown} | {'; '.join(sorted(set(failures)))[:300] or 0} |")
    text = "\n".join(lines) + "\n"
    args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
