"""The REST service: coding with evidence, catalog search, limits, tokens, the audit store and its export."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import SYNTHETIC_SOURCE, TrainedRun

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import medcoder  # noqa: E402
from medcoder.data.synthetic import generate_notes  # noqa: E402
from medcoder.errors import MedcoderError  # noqa: E402
from medcoder.inference.base import Coder  # noqa: E402
from medcoder.serve import ServeSettings, create_app  # noqa: E402
from medcoder.serve.audit import AuditStore, export_feedback, note_hash  # noqa: E402
from medcoder.serve.auth import TokenStore, add_token  # noqa: E402


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").json()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def notes() -> list:
    from medcoder.data.sources.synthetic import SyntheticSource

    return [
        n
        for n in generate_notes(SyntheticSource(**{k: v for k, v in SYNTHETIC_SOURCE.items() if k != "kind"}))
        if n.split == "test"
    ]


@pytest.fixture(scope="module")
def coder(synthetic_run: TrainedRun) -> Coder:
    return medcoder.load(synthetic_run.bundle)


@pytest.fixture()
def served(coder: Coder, tmp_path: Path) -> Iterator[tuple[TestClient, AuditStore]]:
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    app = create_app(coder, ServeSettings(max_note_chars=5000, max_batch=4), audit=audit)
    with TestClient(app) as client:
        _wait_ready(client)
        yield client, audit


def test_codes_one_note_with_evidence_offsets_into_it(served, notes) -> None:
    client, _ = served
    note = notes[0]
    text = "Ünïcödé 😀 header.\n" + note.text  # characters outside the BMP before the mentions
    response = client.post("/v1/code", json={"text": text, "id": "n-1", "top_k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["explained"] is True and body["model_version"].startswith("cli-test@")
    [out] = body["notes"]
    assert out["id"] == "n-1" and out["note_hash"] == note_hash(text)
    ranks = [c["rank"] for c in out["codes"]]
    assert ranks == sorted(ranks) and ranks[0] == 1
    probabilities = [c["probability"] for c in out["codes"]]
    assert probabilities == sorted(probabilities, reverse=True)
    predicted = {c["code"] for c in out["codes"] if c["predicted"]}
    assert predicted & set(note.labels), "the model codes a gold code of a test note"
    spans = [e for c in out["codes"] for e in c["evidence"]]
    assert spans and all(text[e["start"] : e["end"]] == e["text"] for e in spans)


def test_codes_a_batch_in_order(served, notes) -> None:
    client, _ = served
    batch = [{"id": f"b{i}", "text": n.text} for i, n in enumerate(notes[:3])]
    response = client.post("/v1/code", json={"notes": batch, "explain": False, "top_k": 0})
    assert response.status_code == 200
    out = response.json()["notes"]
    assert [n["id"] for n in out] == ["b0", "b1", "b2"]
    assert all(all(c["predicted"] and c["evidence"] == [] for c in n["codes"]) for n in out)
    single = client.post("/v1/code", json={"text": notes[1].text, "explain": False, "top_k": 0}).json()["notes"][0]
    assert [c["code"] for c in single["codes"]] == [c["code"] for c in out[1]["codes"]]


def test_catalog_search_by_code_prefix_and_words(served, coder) -> None:
    client, _ = served
    hits = client.get("/v1/codes/search", params={"q": "e11"}).json()["hits"]
    assert hits and all(h["code"].replace(".", "").startswith("E11") for h in hits)
    words = client.get("/v1/codes/search", params={"q": "heart failure", "limit": 50}).json()["hits"]
    assert len(words) >= 10
    assert all("heart" in h["description"].lower() and "failure" in h["description"].lower() for h in words)
    known = set(coder.codes)
    assert all(h["in_model"] == (h["code"] in known) for h in hits + words)
    assert [h["in_model"] for h in words] == sorted((h["in_model"] for h in words), reverse=True)  # the model's first
    assert client.get("/v1/codes/search", params={"q": "zzzqqq"}).json()["hits"] == []
    typo = client.get("/v1/codes/search", params={"q": "E11", "limt": 5})
    assert (
        typo.status_code == 422
        and typo.json()["error"] == "unknown query parameter 'limt' (this operation takes: limit, q)"
    )
    three = client.post(
        "/v1/code", json={"text": "hypertension", "top_k": 3.0, "explain": False}
    )  # JSON Schema's integer
    assert three.status_code == 200 and len(three.json()["notes"][0]["codes"]) >= 3


def test_decisions_are_stored_with_the_models_probability(served, notes) -> None:
    client, audit = served
    text = notes[0].text
    coded = client.post("/v1/code", json={"text": text, "top_k": 3}).json()
    first = coded["notes"][0]["codes"][0]
    body = {
        "text": text,
        "note_id": "n-7",
        "decisions": [
            {"code": first["code"].lower(), "action": "accept"},
            {"code": "I50.9", "action": "add"},
        ],
    }
    response = client.post("/v1/decisions", json=body)
    assert response.status_code == 201, response.text
    rows = audit.rows()
    assert [(r["code"], r["action"]) for r in rows] == [(first["code"], "accept"), ("I50.9", "add")]
    assert rows[0]["probability"] == pytest.approx(first["probability"])
    assert rows[0]["note_hash"] == note_hash(text) and rows[0]["note_id"] == "n-7"
    assert rows[0]["model_version"] == coded["model_version"]
    assert audit.texts([note_hash(text)]) == {}  # not kept unless asked
    by_hash = client.post(
        "/v1/decisions", json={"note_hash": note_hash(text), "decisions": [{"code": "I50.9", "action": "reject"}]}
    )
    assert by_hash.status_code == 201
    assert [r["action"] for r in audit.rows(digest=note_hash(text))] == ["accept", "add", "reject"]


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        ({"json": {"text": "x" * 5001}}, 413, "note 0: 5001 characters, the limit is 5000"),
        ({"json": {"notes": [{"text": "a"}] * 5}}, 413, "5 notes in one request: the limit is 4"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "the body is not valid JSON"),
        ({"json": {"text": 42}}, 422, "text"),
        ({"json": {"text": "ok", "top_k": "many"}}, 422, "top_k"),
        ({"json": {"text": "ok", "top_k": False}}, 422, "top_k"),  # strict JSON types: false is not 0
        ({"json": {"text": "ok", "top_k": 2.5}}, 422, "top_k"),
        ({"json": {"text": "   "}}, 422, "text"),
        ({"json": {"text": "ok", "notes": [{"text": "b"}]}}, 422, "invalid request: text: not a field of this request"),
        (
            {"json": {"text": "ok", "top_k": 3, "coder": "bob"}},
            422,
            "invalid request: coder: not a field of this request",
        ),
        ({"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}}, 413, "request body larger"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(served, request_, status, message) -> None:
    client, audit = served
    response = client.post("/v1/code", **request_)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert "x" * 50 not in response.text  # the note is not echoed back
    assert audit.rows() == []


def test_bad_decisions_store_nothing(served) -> None:
    client, audit = served
    cases = [
        {"text": "a note", "decisions": [{"code": "NOT-A-CODE", "action": "accept"}]},
        {"text": "a note", "decisions": [{"code": "I10", "action": "approve"}]},
        {"text": "a note", "coder": "someone-else", "decisions": [{"code": "I10", "action": "accept"}]},
        {"note_hash": "abc", "decisions": [{"code": "I10", "action": "accept"}]},
        {"text": "a note", "decisions": []},
    ]
    for body in cases:
        response = client.post("/v1/decisions", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]
    assert (
        "neither a code of the model nor of its catalog" in client.post("/v1/decisions", json=cases[0]).json()["error"]
    )
    assert audit.rows() == []


def test_model_info_and_report(served, synthetic_run: TrainedRun) -> None:
    client, _ = served
    info = client.get("/v1/model").json()
    metrics = synthetic_run.metrics["test"]["all_gold"]
    assert info["n_codes"] == len(json.loads((synthetic_run.bundle / "labels.json").read_text())["codes"])
    assert info["metrics"]["test (all gold)"]["map"] == pytest.approx(metrics["map"])
    assert info["model_type"] == "tfidf_lr.v1" and info["can_explain"] is True and info["label_system"] == "icd10cm"
    labels = json.loads((synthetic_run.bundle / "labels.json").read_text())
    space = info["label_space"]
    assert space["system"] == "icd10cm" and space["level"] == "full" and space["n_codes"] == len(labels["codes"])
    assert sum(space["codes_by_train_notes"].values()) == len(labels["codes"])
    assert space["n_train_notes"] == labels["report"]["n_docs"]
    most = space["most_frequent"][0]
    assert (
        most["train_notes"] == max(labels["train_freq"].values())
        and labels["train_freq"][most["code"]] == most["train_notes"]
    )
    assert "## " in info["card"]
    assert info["report"] is False
    missing = client.get("/v1/model/report")
    assert missing.status_code == 404 and "medcoder report" in missing.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "medcoder workbench" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere: the page works offline
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load a CDN
    assert client.get("/openapi.json").json()["paths"]["/v1/code"]


def test_note_text_is_never_logged(coder, tmp_path) -> None:
    marker = "Zyxwvut-unique-phrase hypertension"
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("medcoder", "uvicorn", "fastapi", "sqlalchemy")]
    levels = [log.level for log in loggers]
    for log in loggers:  # every message of the service and the libraries it runs on, at DEBUG
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    try:
        app = create_app(
            coder, ServeSettings(max_note_chars=100), audit=AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
        )
        with TestClient(app) as client:
            _wait_ready(client)
            assert client.post("/v1/code", json={"text": marker}).status_code == 200
            assert client.post("/v1/code", json={"text": marker * 10}).status_code == 413
            body = {"text": marker, "keep_text": True, "decisions": [{"code": "I10", "action": "accept"}]}
            assert client.post("/v1/decisions", json=body).status_code == 201
            assert (
                client.post("/v1/decisions", json={**body, "decisions": [{"code": "?", "action": "x"}]}).status_code
                == 422
            )
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)
    text = "\n".join(records)
    assert "coded 1 note(s)" in text and "stored 1 decision(s)" in text  # DEBUG lines, not one per request at INFO
    assert "Zyxwvut" not in text


# ------------------------------------------------------------------ tokens
@pytest.fixture()
def with_tokens(coder, tmp_path) -> Iterator[tuple[TestClient, AuditStore, dict[str, str]]]:
    file = tmp_path / "tokens.json"
    tokens = {name: add_token(file, name, admin=name == "lead") for name in ("alice", "bob", "lead")}
    assert tokens["alice"] not in file.read_text()  # only hashes are stored
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    app = create_app(coder, ServeSettings(host="0.0.0.0", tokens_file=file), audit=audit)
    with TestClient(app) as client:
        _wait_ready(client)
        yield client, audit, tokens


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_name_the_coder(with_tokens) -> None:
    client, audit, tokens = with_tokens
    body = {"text": "essential hypertension", "decisions": [{"code": "I10", "action": "accept"}]}
    missing = client.post("/v1/decisions", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing token" in missing.json()["error"]
    wrong = client.post("/v1/decisions", json=body, headers=_auth("not-a-token"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "unknown token"
    assert client.post("/v1/code", json={"text": "x"}).status_code == 401
    assert audit.rows() == []
    assert client.post("/v1/decisions", json=body, headers=_auth(tokens["alice"])).status_code == 201
    assert client.post("/v1/decisions", json=body, headers=_auth(tokens["bob"])).status_code == 201
    assert [r["coder"] for r in audit.rows()] == ["alice", "bob"]
    assert client.get("/v1/model", headers=_auth(tokens["bob"])).json()["coder"] == "bob"
    mine = client.get("/v1/decisions", headers=_auth(tokens["alice"])).json()["stored"]
    assert [r["coder"] for r in mine] == ["alice"]
    other = client.get("/v1/decisions", params={"coder": "bob"}, headers=_auth(tokens["alice"]))
    assert other.status_code == 403 and other.json()["error"] == "alice may not read the decisions of bob"
    lead = client.get("/v1/decisions", params={"coder": "bob"}, headers=_auth(tokens["lead"])).json()["stored"]
    assert [r["coder"] for r in lead] == ["bob"]
    assert client.get("/health").status_code == 200  # no token needed to see it is up
    assert len(audit.rows()) == 2


def test_beyond_loopback_needs_tokens(coder, tmp_path, cli, synthetic_run) -> None:
    with pytest.raises(MedcoderError, match="--tokens FILE"):
        create_app(coder, ServeSettings(host="0.0.0.0"))
    result = cli("serve", synthetic_run.bundle, "--host", "10.1.2.3")
    assert result.code == 2 and "reachable from other machines" in result.err
    bad = tmp_path / "tokens.json"
    bad.write_text('{"tokens": [{"user": "eve", "sha256": "short"}]}')
    with pytest.raises(MedcoderError, match="sha256 must be 64 hex digits"):
        TokenStore.read(bad)


def test_token_command_prints_a_working_token(cli, tmp_path) -> None:
    file = tmp_path / "t.json"
    result = cli("token", "add", "carol", "--tokens", file)
    assert result.code == 0
    token = result.out.strip()
    store = TokenStore.read(file)
    assert store.user(token).name == "carol" and store.user(token + "x") is None


# ------------------------------------------------------------------ bounded work
class _Gated(Coder):
    """A coder whose predictions wait for a gate: lets a test hold the workers busy."""

    kind = "model"

    def __init__(self, inner: Coder) -> None:
        super().__init__(inner.path, inner.header)
        self.inner = inner
        self.gate = threading.Event()
        self.started = threading.Event()

    @classmethod
    def load(cls, path, header):  # pragma: no cover - never loaded from disk
        raise NotImplementedError

    @property
    def codes(self) -> list[str]:
        return self.inner.codes

    @property
    def name(self) -> str:
        return self.inner.name

    def description(self, code: str) -> str | None:
        return self.inner.description(code)

    @property
    def capabilities(self):
        return self.inner.capabilities

    @property
    def decision(self):
        return self.inner.decision

    def label_space(self):
        return self.inner.label_space()

    def score_batch(self, texts: Sequence[str], pairs):
        self.started.set()
        assert self.gate.wait(30)
        return self.inner.score_batch(texts, pairs)

    def evidence(self, texts, codes, top, context):
        return self.inner.evidence(texts, codes, top, context)

    def data_config(self):
        return self.inner.data_config()

    def evaluate(self, notes, **kwargs):
        return self.inner.evaluate(notes, **kwargs)

    def metrics_table(self, metrics):
        return self.inner.metrics_table(metrics)


def test_a_full_queue_answers_503_and_a_slow_request_504(coder, tmp_path) -> None:
    gated = _Gated(coder)
    settings = ServeSettings(workers=1, queue_size=0, request_timeout_s=0.5)
    app = create_app(gated, settings, audit=AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}"))
    with TestClient(app) as client:
        _wait_ready(client)
        results: list = []
        first = threading.Thread(target=lambda: results.append(client.post("/v1/code", json={"text": "hypertension"})))
        first.start()
        assert gated.started.wait(10)
        busy = client.post("/v1/code", json={"text": "hypertension"})
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        assert "busy" in busy.json()["error"]
        first.join(10)
        assert results[0].status_code == 504 and "longer than 0.5 s" in results[0].json()["error"]
        # the timed-out call still runs and holds its worker: no pile-up behind it
        assert client.post("/v1/code", json={"text": "hypertension"}).status_code == 503
        gated.gate.set()
        deadline = time.monotonic() + 10
        while (ok := client.post("/v1/code", json={"text": "hypertension"})).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ok.status_code == 200


# ------------------------------------------------------------------ feedback export
def test_feedback_export_writes_training_records(cli, coder, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    app = create_app(coder, ServeSettings(), audit=AuditStore(url))
    kept, private = "Essential hypertension, on lisinopril.", "Type 2 diabetes mellitus."
    with TestClient(app) as client:
        _wait_ready(client)
        client.post("/v1/code", json={"text": kept})
        decisions = [{"code": "I10", "action": "accept"}, {"code": "R07.9", "action": "reject"}]
        body = {"text": kept, "note_id": "k1", "keep_text": True, "decisions": decisions}
        assert client.post("/v1/decisions", json=body).status_code == 201
        body = {"text": kept, "note_id": "k1", "decisions": [{"code": "E78.5", "action": "add"}]}
        assert client.post("/v1/decisions", json=body).status_code == 201
        body = {
            "text": private,
            "decisions": [{"code": "E11.9", "action": "accept"}, {"code": "E11.9", "action": "reject"}],
        }
        assert client.post("/v1/decisions", json=body).status_code == 201
    out = tmp_path / "feedback.jsonl"
    result = cli("feedback", "export", "--db", url, "-o", out)
    assert result.code == 0, result.err
    records = {r["note_hash"]: r for r in map(json.loads, out.read_text().splitlines())}
    first = records[note_hash(kept)]
    assert first["id"] == "k1" and first["text"] == kept
    assert first["labels"] == ["I10", "E78.5"] and first["rejected"] == ["R07.9"]
    second = records[note_hash(private)]
    assert (
        "text" not in second and second["labels"] == [] and second["rejected"] == ["E11.9"]
    )  # the last decision counts
    only_text = tmp_path / "with_text.jsonl"
    assert cli("feedback", "export", "--db", url, "-o", only_text, "--with-text-only").code == 0
    # the export is a training file medcoder reads as it is
    from medcoder.data.sources.jsonl import JsonlSource

    [note] = JsonlSource(path=only_text).read()
    assert note.text == kept and set(note.labels) == {"I10", "E78.5"}
    missing = cli("feedback", "export", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}", "-o", out)
    assert missing.code == 2 and "no audit database here" in missing.err


def test_audit_store_on_postgresql() -> None:
    url = os.environ.get("MEDCODER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("MEDCODER_TEST_POSTGRES_URL is not set: .ci/run starts a PostgreSQL server and sets it")
    import sqlalchemy as sa

    from medcoder.serve.audit import Decision, feedback_records

    store = AuditStore(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM medcoder_decisions"))
        conn.execute(sa.text("DELETE FROM medcoder_notes"))
    digest = note_hash("chest pain")
    ids = store.record(
        coder="alice",
        note_id="p1",
        digest=digest,
        decisions=[Decision("R07.9", "accept", 0.8), Decision("I10", "reject", 0.1)],
        model_version="m@1",
        text="chest pain",
    )
    assert len(ids) == 2
    rows = store.rows(coder="alice")
    assert [(r["code"], r["action"], r["probability"]) for r in rows] == [
        ("R07.9", "accept", 0.8),
        ("I10", "reject", 0.1),
    ]
    assert rows[0]["created_at"].endswith("+00:00")
    [record] = feedback_records(store)
    assert record["labels"] == ["R07.9"] and record["text"] == "chest pain"
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"pg-feedback-{os.getpid()}.jsonl"
    try:
        assert export_feedback(url, out)["notes"] == 1
    finally:
        out.unlink(missing_ok=True)
    store.close()


def test_settings_bind_to_loopback_by_default(tmp_path) -> None:
    settings = ServeSettings()
    assert settings.loopback and settings.tokens_file is None
    assert ServeSettings(host="::1").loopback and ServeSettings(host="localhost").loopback
    assert not ServeSettings(host="192.168.0.4", tokens_file=tmp_path).loopback


def test_report_command_feeds_the_model_tab(cli, synthetic_run: TrainedRun, tmp_path) -> None:
    bundle = synthetic_run.copy_bundle(tmp_path / "model")
    result = cli("report", bundle)
    assert result.code == 0, result.err
    html = (bundle / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "Per code" in html
    app = create_app(bundle, ServeSettings(), audit=AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}"))
    with TestClient(app) as client:
        _wait_ready(client)
        assert client.get("/v1/model").json()["report"] is True
        served = client.get("/v1/model/report")
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
        assert served.text == html
    missing = cli("report", tmp_path / "nothing-here")
    assert missing.code == 2 and "nothing-here" in missing.err


class _Suggesting(_Gated):
    """A coder that also suggests a code never seen in training (as a retrieval system does)."""

    @property
    def capabilities(self):
        from dataclasses import replace

        return replace(self.inner.capabilities, new_codes=True)

    def description(self, code: str) -> str | None:
        return "Secondary malignant neoplasm of brain" if code == "C79.31" else self.inner.description(code)

    def score_batch(self, texts: Sequence[str], pairs):
        scores = self.inner.score_batch(texts, pairs)
        scores.new_codes = [[("C79.31", 0.42)] for _ in texts]
        return scores

    def evidence(self, texts, codes, top, context):
        from medcoder.inference.base import Evidence

        out = self.inner.evidence(texts, [[c for c in wanted if c != "C79.31"] for wanted in codes], top, context)
        for text, wanted, found in zip(texts, codes, out, strict=True):
            start = text.find("brain")
            if "C79.31" in wanted:
                found["C79.31"] = [Evidence(start, start + 5, "brain", 0.91, "retrieval")] if start >= 0 else []
        return out


def test_codes_never_seen_in_training_are_suggested_apart(coder, tmp_path) -> None:
    audit = AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    app = create_app(_Suggesting(coder), ServeSettings(), audit=audit)
    text = "Metastasis to the brain. Essential hypertension."
    with TestClient(app) as client:
        _wait_ready(client)
        [note] = client.post("/v1/code", json={"text": text}).json()["notes"]
        [new] = note["new_codes"]
        assert new["code"] == "C79.31" and new["code"] not in {c["code"] for c in note["codes"]}
        [span] = new["evidence"]
        assert text[span["start"] : span["end"]] == "brain" and span["source"] == "retrieval"
        body = {"text": text, "decisions": [{"code": "C79.31", "action": "accept"}]}
        assert client.post("/v1/decisions", json=body).status_code == 201
    assert audit.rows()[0]["probability"] == pytest.approx(0.42)


class _Recording(_Gated):
    """Records the notes of every model call; a note saying "poison" makes the call fail."""

    def __init__(self, inner: Coder) -> None:
        super().__init__(inner)
        self.calls: list[list[str]] = []

    def predict(self, texts, **kwargs):
        self.calls.append(list(texts))
        self.started.set()
        assert self.gate.wait(30)
        if any("poison" in t for t in texts):
            raise MedcoderError("cannot code a poisoned note")
        return self.inner.predict(texts, **kwargs)


def test_waiting_requests_are_coded_in_one_call_and_a_bad_one_fails_alone(coder, notes, tmp_path) -> None:
    recording = _Recording(coder)
    app = create_app(
        recording, ServeSettings(workers=1, queue_size=4), audit=AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    )
    first, second, third = notes[0].text, notes[1].text, "poison " + notes[2].text
    with TestClient(app) as client:
        _wait_ready(client)
        results: dict[str, object] = {}

        def send(name: str, body: dict) -> None:
            results[name] = client.post("/v1/code", json=body)

        threads = [threading.Thread(target=send, args=("a", {"text": first, "top_k": 2}))]
        threads[0].start()
        assert recording.started.wait(10)  # the worker is busy with a: the next ones wait together
        threads += [
            threading.Thread(target=send, args=("b", {"text": second, "top_k": 0, "explain": False})),
            threading.Thread(target=send, args=("c", {"text": third})),
        ]
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 10
        while app.state.medcoder.pool.in_use < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        recording.gate.set()
        for thread in threads:
            thread.join(30)
        assert [len(call) for call in recording.calls] == [1, 2, 1, 1]  # a; b+c together, failed; then b, c alone
        assert results["a"].status_code == 200 and results["b"].status_code == 200
        assert results["c"].status_code == 422 and results["c"].json()["error"] == "cannot code a poisoned note"
        alone = client.post("/v1/code", json={"text": second, "top_k": 0, "explain": False}).json()["notes"][0]
        assert results["b"].json()["notes"][0] == alone  # its own top_k and no evidence, as if coded alone
        two = results["a"].json()["notes"][0]["codes"]
        assert all(c["predicted"] or c["rank"] <= 2 for c in two) and any(c["evidence"] for c in two)


def test_a_batch_call_gives_each_request_what_it_asked(coder, notes, tmp_path) -> None:
    from medcoder.serve.state import CodeJob, ServiceState

    state = ServiceState(ServeSettings())
    state.start(coder)
    jobs = [
        CodeJob([notes[0].text], ["x"], 0, False),
        CodeJob([notes[1].text, notes[2].text], ["y", "z"], 5, True),
    ]
    batched = state.code_batch(jobs)
    alone = [coder.predict(j.texts, ids=j.ids, top_k=j.top_k, explain=j.explain) for j in jobs]
    assert batched == alone


def test_the_service_codes_while_any_of_its_lifespans_runs(coder, notes, tmp_path) -> None:
    """A test client and schemathesis's ASGI transport each start the app: the end of one must not stop the other's
    inference pool, and an app started anew codes again (its system loaded once)."""
    app = create_app(coder, ServeSettings(request_timeout_s=5), audit=AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}"))
    body = {"text": notes[0].text, "top_k": 1}
    with TestClient(app) as first:
        _wait_ready(first)
        with TestClient(app) as second:
            assert second.post("/v1/code", json=body).status_code == 200
        assert first.post("/v1/code", json=body).status_code == 200
    with TestClient(app) as again:
        assert again.post("/v1/code", json=body).status_code == 200


def test_evidence_spans_are_whole_words() -> None:
    from medcoder.inference.model import whole_words

    text = "- nitrofurantoin 100 mg; the mid shins bilaterally."
    start = text.index("nitrofur")
    assert text.__getitem__(slice(*whole_words(text, start, start + 8))) == "nitrofurantoin"
    inner = text.index("ilateral")
    assert text.__getitem__(slice(*whole_words(text, inner, inner + 4))) == "bilaterally"
    shins = text.index("shins")
    assert whole_words(text, shins, shins + 5) == (shins, shins + 5)  # already whole: unchanged
    assert whole_words(text, 0, 1) == (0, 1)


def test_the_coded_note_record_is_written_whole_and_is_the_api_schema() -> None:
    """``to_dict`` is written by hand (for speed) and the API models are built from the records: neither may drop
    a field of the record, and the service's JSON is the record's plus what the API adds (``note_hash``)."""
    from dataclasses import asdict, fields

    from medcoder.inference.records import CodeScore, Evidence, NotePrediction
    from medcoder.serve.schemas import CodeOut, EvidenceOut, NoteOut

    span = Evidence(3, 9, "asthma", 0.5, source="retrieval")
    note = NotePrediction(
        "n1", [CodeScore("J45", "Asthma", 0.9, True, 1, [span])], [CodeScore("J45.9", None, 0.2, False, 1, [span])]
    )
    assert json.dumps(note.to_dict()) == json.dumps(asdict(note))  # every field, in the record's order
    bare = NotePrediction("n2", [CodeScore("I10", None, 0.4, False, 2)])
    assert bare.to_dict() == {  # evidence only when explained, new_codes only when suggested
        "id": "n2",
        "codes": [{"code": "I10", "description": None, "probability": 0.4, "predicted": False, "rank": 2}],
    }

    def names(record: type) -> list[str]:
        return [f.name for f in fields(record)]

    assert list(EvidenceOut.model_fields) == names(Evidence)
    assert list(CodeOut.model_fields) == names(CodeScore)
    assert list(NoteOut.model_fields) == ["id", "note_hash", *names(NotePrediction)[1:]]
    served = NoteOut.model_validate({**note.to_dict(), "note_hash": "ab"}).model_dump(mode="json")
    assert json.dumps(served) == json.dumps({"id": "n1", "note_hash": "ab", **asdict(note)})
    unexplained = NoteOut.model_validate({**bare.to_dict(), "note_hash": "cd"}).model_dump(mode="json")
    assert unexplained["codes"][0]["evidence"] == [] and unexplained["new_codes"] is None  # what clients get today
