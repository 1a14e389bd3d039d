"""Property-based fuzzing of the service against its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid; each response must
not be a server error, must have a status code, content type, headers and body
that the schema documents, and invalid requests must be rejected.
`bench/serve_fuzz.py` runs the same against a live `medcoder serve` with more cases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TrainedRun

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import checks  # noqa: E402

import medcoder  # noqa: E402
from medcoder.serve import ServeSettings, create_app  # noqa: E402
from medcoder.serve.audit import AuditStore  # noqa: E402
from medcoder.serve.auth import add_token  # noqa: E402

# What the schema promises. Not positive_data_acceptance: a schema-valid request may still be refused on
# purpose (a code that is in no catalog: 422; a note over the size limit: 413), with a documented status.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]
_TOKEN: dict[str, str] = {}
NO_INPUT = {"GET /health", "GET /ready", "GET /v1/model", "GET /v1/model/report"}
WITH_INPUT = {"POST /v1/code", "GET /v1/codes/search", "POST /v1/decisions", "GET /v1/decisions"}


@pytest.fixture(scope="module")
def api(synthetic_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    _TOKEN["alice"] = add_token(folder / "tokens.json", "alice")
    settings_ = ServeSettings(host="0.0.0.0", tokens_file=folder / "tokens.json", max_note_chars=3000, max_batch=4)
    app = create_app(
        medcoder.load(synthetic_run.bundle), settings_, audit=AuditStore(f"sqlite:///{folder / 'a.sqlite'}")
    )
    with TestClient(app) as client:  # runs the start-up: model and catalog search loaded
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_service_keeps_its_schema(api, mode: str) -> None:
    from hypothesis import given

    tried: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @given(case=strategy)
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN['alice']}"}, checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:  # an operation that takes no input has no invalid input to try
            assert mode == "negative" and operation.label in NO_INPUT, operation.label
            continue
        tried.append(operation.label)
    assert len(tried) >= 8 - len(NO_INPUT) and set(tried) >= WITH_INPUT, tried  # every operation with input fuzzed
