"""``create_app``: the FastAPI app of ``medcoder serve`` (the REST service and the coder's web page)."""

import contextlib
import getpass
import hashlib
import importlib.resources
import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medcoder.data.labels import LabelSpace
from medcoder.errors import MedcoderError
from medcoder.evaluation.metrics import DEFAULT_FREQUENCY_BINS, frequency_bin_name
from medcoder.inference.base import Coder, CodeScore, NotePrediction
from medcoder.serve.audit import AuditStore, Decision, note_hash
from medcoder.serve.auth import TokenStore, User
from medcoder.serve.catalog import CodeSearch
from medcoder.serve.schemas import (
    CodeBatchRequest,
    CodeOneRequest,
    CodeResponse,
    DecisionOut,
    DecisionsByHash,
    DecisionsByText,
    DecisionsResponse,
    ErrorOut,
    Health,
    ModelInfo,
    NoteOut,
    SearchHit,
    SearchResponse,
)
from medcoder.serve.settings import ServeSettings
from medcoder.serve.work import Busy, InferencePool, TimedOut

logger = logging.getLogger("medcoder.serve")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "The body could not be read as text (not UTF-8).",
        401: "No token, or a token nobody has (only when the service uses tokens).",
        403: "Your token does not allow this.",
        413: "A note longer than the limit, more notes than the batch limit, or a body too large.",
        422: "The request does not have the shape this schema gives.",
        503: "Busy (the queue is full; see Retry-After) or still loading the model.",
        504: "The request took longer than the request timeout.",
    }.items()
}
_PROBABILITY_CACHE = 4096  # notes whose listed codes' probabilities are kept for the audit


def _static_dir() -> Path:
    return Path(str(importlib.resources.files("medcoder.serve") / "static"))


def model_version(path: Path | None, header: dict[str, Any]) -> str:
    """``name@hash``: the bundle's name and the first 12 hex digits of the SHA-256 of its config.json."""
    name = (header.get("run") or {}).get("name") or header.get("name") or (path.name if path else header.get("kind"))
    if path is not None and (path / "config.json").is_file():
        digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()
    else:
        digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}@{digest[:12]}"


def _headline_metrics(path: Path | None, header: dict[str, Any]) -> dict[str, Any]:
    """Test figures for the model tab: a model's metrics.json test split, another system's config metrics."""
    if path is not None and (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        test = metrics.get("test", {})
        if "all_gold" in test:
            return {
                "test (all gold)": {k: v for k, v in test["all_gold"].items() if isinstance(v, int | float)},
                "test (train-seen)": {
                    k: v for k, v in test.get("train_seen", {}).items() if isinstance(v, int | float)
                },
            }
        return {"test": {k: v for k, v in test.items() if isinstance(v, int | float)}}
    metrics = header.get("metrics")
    return metrics if isinstance(metrics, dict) else {}


class _BodyLimit:
    """ASGI middleware: a request body larger than ``limit`` bytes gets 413 before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message_in = await receive()
            if message_in["type"] == "http.request":
                seen += len(message_in.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message_in

        async def tracking_send(message_out: Message) -> None:
            nonlocal started
            if message_out["type"] == "http.response.start":
                started = True
            await send(message_out)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class _CodeJob:
    texts: list[str]
    ids: list[str | None]
    top_k: int
    explain: bool


def _trimmed(prediction: NotePrediction, top_k: int, explain: bool) -> NotePrediction:
    """``prediction`` as a call with this ``top_k`` and ``explain`` would have given it."""

    def keep(codes: list[CodeScore] | None, cut: bool) -> list[CodeScore] | None:
        if codes is None:
            return None
        kept = [c for c in codes if not cut or c.predicted or c.rank <= top_k]
        return kept if explain else [replace(c, evidence=None) for c in kept]

    return replace(prediction, codes=keep(prediction.codes, True), new_codes=keep(prediction.new_codes, False))


class _State:
    """What the app holds once started: the system, its catalog search, the pool, the audit store."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.coder: Coder | None = None
        self.search: CodeSearch | None = None
        self.version = ""
        self.system = "none"
        # what GET /v1/model shows, read once the system is loaded
        self.label_summary: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.card: str | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.pool = InferencePool(
            self.code_batch, workers=settings.workers, queue_size=settings.queue_size, batch_notes=settings.batch_notes
        )
        self.probabilities: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.lock = threading.Lock()

    def start(self, model: str | Path | Coder) -> None:
        """Load the system (unless given loaded) and build its catalog search; ``ready`` once done."""
        try:
            if isinstance(model, Coder):
                coder = model
            else:
                from medcoder.inference.load import load

                coder = load(model)
            if coder.needs_pairs:
                raise MedcoderError("this model codes sentence pairs; the workbench codes single notes")
            labels = coder.label_space()
            # a retrieval system without a classifier ranks the ICD-10-CM catalog itself
            self.system = labels.system if labels is not None else "icd10cm" if coder.kind == "retrieval" else "none"
            self.version = model_version(coder.path, coder.header)
            self.label_summary = _label_summary(coder, labels)
            self.metrics = _headline_metrics(coder.path, coder.header)
            card = None if coder.path is None else coder.path / "README.md"
            self.card = (
                card.read_text(encoding="utf-8", errors="replace") if card is not None and card.is_file() else None
            )
            self.search = CodeSearch(coder, self.system)
            self.coder = coder
            logger.info(
                "serving %s (%d codes; catalog search over %d)", self.version, len(coder.codes), len(self.search)
            )
        except MedcoderError as exc:
            self.error = str(exc)
            logger.error("cannot serve the model: %s", exc)
        finally:
            self.ready.set()

    def code_batch(self, requests: Sequence[_CodeJob]) -> list[list[NotePrediction]]:
        """Code the notes of several requests in one model call; each gets its own top_k and evidence back."""
        coder = self.coder
        assert coder is not None
        texts = [t for r in requests for t in r.texts]
        ids = [i for r in requests for i in r.ids]
        top_k = max(r.top_k for r in requests)
        explain = any(r.explain for r in requests)
        predictions = coder.predict(texts, ids=ids, top_k=top_k, explain=explain)
        out, at = [], 0
        for r in requests:
            mine = predictions[at : at + len(r.texts)]
            at += len(r.texts)
            if r.top_k < top_k or (explain and not r.explain):
                mine = [_trimmed(p, r.top_k, r.explain) for p in mine]
            out.append(mine)
        return out

    def remember(self, predictions: list[NotePrediction], digests: list[str]) -> None:
        with self.lock:
            for prediction, digest in zip(predictions, digests, strict=True):
                listed = {c.code: c.probability for c in [*prediction.codes, *(prediction.new_codes or [])]}
                self.probabilities[digest] = {**self.probabilities.pop(digest, {}), **listed}
            while len(self.probabilities) > _PROBABILITY_CACHE:
                self.probabilities.popitem(last=False)

    def probability(self, digest: str, code: str) -> float | None:
        with self.lock:
            return self.probabilities.get(digest, {}).get(code)


def _label_summary(coder: Coder, labels: LabelSpace | None) -> dict[str, Any]:
    """The label space in a few figures: catalog, level, filters, train notes, codes by train frequency."""
    summary: dict[str, Any] = {"n_codes": len(coder.codes)}
    if labels is None:
        return summary
    counts = [labels.train_freq.get(code, 0) for code in coder.codes]
    bins = {"0 (catalog only)": sum(c == 0 for c in counts)} if any(c == 0 for c in counts) else {}
    for low, high in DEFAULT_FREQUENCY_BINS:
        bins[frequency_bin_name(low, high)] = sum(low <= c and (high is None or c <= high) for c in counts)
    top = sorted(coder.codes, key=lambda code: -labels.train_freq.get(code, 0))[:10]
    summary.update(
        system=labels.system,
        level=labels.level,
        truncate=labels.truncate,
        min_freq=labels.min_freq,
        top_k=labels.top_k,
        n_train_notes=labels.report.get("n_docs"),
        codes_by_train_notes=bins,
        most_frequent=[
            {"code": c, "description": coder.description(c), "train_notes": labels.train_freq.get(c, 0)} for c in top
        ],
    )
    return summary


def _local_name() -> str:
    """Who runs the service: the coder of every request when no tokens are used."""
    try:
        return getpass.getuser() or "local"
    except (KeyError, OSError):  # a container user with no name
        return "local"


def _query_names(dependant: Any) -> set[str]:
    """The query parameters an operation takes, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


# A body of two shapes: the one the client meant, by the key only it has (its errors alone are reported).
_SHAPES = {"CodeBatchRequest": ("notes", "CodeOneRequest"), "DecisionsByHash": ("note_hash", "DecisionsByText")}


def _meant(errors: list[dict[str, Any]], body: Any) -> list[dict[str, Any]]:
    """The errors of the body shape the client meant, the shape's name dropped from their location."""
    named = {str(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1 and e["loc"][0] == "body"}
    for shape, (key, other) in _SHAPES.items():
        if {shape, other} & named:
            wanted = shape if isinstance(body, dict) and key in body else other
            kept = [
                e
                for e in errors
                if len(e["loc"]) < 2 or str(e["loc"][1]) not in (shape, other) or e["loc"][1] == wanted
            ]
            return [
                {**e, "loc": (e["loc"][0], *e["loc"][2:]) if len(e["loc"]) > 1 and e["loc"][1] == wanted else e["loc"]}
                for e in kept
            ]
    return errors


def _validation_message(errors: list[dict[str, Any]], body: Any = None) -> tuple[str, list[dict[str, Any]]]:
    """One line and a detail list, without echoing the input (it may hold a note's text)."""
    errors = _meant(errors, body)
    detail = []
    for e in errors:
        message = str(e.get("msg", ""))
        if e.get("type") == "extra_forbidden":
            message = "not a field of this request"
        elif e.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')})"
        detail.append({"loc": [str(p) for p in e.get("loc", ())], "msg": message, "type": e.get("type")})
    parts = []
    for d in detail[:5]:
        where = d["loc"][1:] if d["loc"][:1] == ["body"] else d["loc"]
        parts.append(d["msg"] if d["type"] == "json_invalid" else f"{'.'.join(where) or 'body'}: {d['msg']}")
    more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, detail


def create_app(
    model: str | Path | Coder,
    settings: ServeSettings | None = None,
    *,
    audit: AuditStore | None = None,
    tokens: TokenStore | None = None,
) -> FastAPI:
    """The workbench app for the saved system ``model`` (a bundle folder, or a loaded :class:`Coder`).

    The system is loaded once, in a thread at start-up (``/ready`` answers 503
    until then). Tokens come from ``settings.tokens_file`` unless given; without
    them every request is the local coder (only allowed on loopback).
    """
    settings = settings or ServeSettings()
    settings.check_access()
    if tokens is None and settings.tokens_file is not None:
        tokens = TokenStore.read(settings.tokens_file)
    state = _State(settings)
    own_audit = audit is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal audit
        if audit is None:
            audit = AuditStore(settings.database_url)
        app.state.audit = audit
        threading.Thread(target=state.start, args=(model,), name="medcoder-load", daemon=True).start()
        try:
            yield
        finally:
            state.pool.shutdown()
            if own_audit and audit is not None:
                audit.close()

    local_user = User(_local_name(), admin=True)

    if tokens is None:  # loopback without tokens: the schema asks for none

        def current_user() -> User:
            return local_user

    else:
        bearer = HTTPBearer(auto_error=False, description="A per-coder token (`medcoder token add`).")

        def current_user(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
            if credentials is None:
                raise _error(401, "missing token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
            user = tokens.user(credentials.credentials)
            if user is None:
                raise _error(401, "unknown token", {"WWW-Authenticate": "Bearer"})
            return user

    def known_query(request: Request) -> None:
        """A query parameter the operation does not take is an error that names it (a typo is not ignored)."""
        route = request.scope.get("route")
        if route is None or not hasattr(route, "dependant") or not request.query_params:
            return
        allowed = _query_names(route.dependant)
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            expected = ", ".join(sorted(allowed)) or "none"
            raise _error(422, f"unknown query parameter {unknown[0]!r} (this operation takes: {expected})")

    app = FastAPI(
        title="medcoder workbench",
        version="1",
        description="Code clinical notes with evidence, search the catalog, keep every coder's decision.",
        lifespan=lifespan,
        dependencies=[Depends(known_query)],
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: offline they are blank pages.
        # The schema itself is /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.medcoder = state
    app.add_middleware(_BodyLimit, limit=settings.body_limit)

    def ready_state() -> _State:
        if not state.ready.is_set():
            raise _error(503, "the model is still loading", {"Retry-After": "5"})
        if state.coder is None:
            raise _error(503, f"the model could not be loaded: {state.error}")
        return state

    User_ = Annotated[User, Depends(current_user)]
    Ready = Annotated[_State, Depends(ready_state)]

    # ------------------------------------------------------------------ errors
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message = "the request body could not be read: send JSON in UTF-8"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = _validation_message(list(exc.errors()), exc.body)
        return JSONResponse({"error": message, "detail": detail}, status_code=422)

    @app.exception_handler(MedcoderError)
    async def user_error(request: Request, exc: MedcoderError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        # the type and the frames only: an exception's message may quote a note
        frames = "".join(traceback.format_tb(exc.__traceback__))
        logger.error("internal error on %s %s: %s\n%s", request.method, request.url.path, type(exc).__name__, frames)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, 500)

    # ------------------------------------------------------------------ health
    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/ready", response_model=Health, responses={503: _ERRORS[503]}, tags=["service"])
    def ready(current: Ready) -> Health:
        """The model is loaded and the catalog search built."""
        return Health(status="ready")

    # ------------------------------------------------------------------ coding
    @app.post(
        "/v1/code",
        response_model=CodeResponse,
        responses={k: _ERRORS[k] for k in (400, 401, 413, 422, 503, 504)},
        tags=["coding"],
    )
    async def code(
        body: Annotated[CodeOneRequest | CodeBatchRequest, Body()], user: User_, current: Ready
    ) -> CodeResponse:
        """Code one note (`text`) or a batch (`notes`): ranked codes, probabilities, evidence spans."""
        if isinstance(body, CodeOneRequest):
            texts, ids = [body.text], [body.id]
        else:
            texts, ids = [n.text for n in body.notes], [n.id for n in body.notes]
        if len(texts) > settings.max_batch:
            raise _error(413, f"{len(texts)} notes in one request: the limit is {settings.max_batch}")
        for i, text in enumerate(texts):
            if len(text) > settings.max_note_chars:
                raise _error(413, f"note {i}: {len(text)} characters, the limit is {settings.max_note_chars}")
        top_k = settings.top_k if body.top_k is None else body.top_k  # at most 200: the schema says so
        coder = current.coder
        assert coder is not None
        explain = body.explain and coder.can_explain()
        started = time.perf_counter()
        try:
            job = _CodeJob(texts, ids, top_k, explain)
            predictions = await current.pool.run(job, size=len(texts), timeout=settings.request_timeout_s)
        except Busy as exc:
            raise _error(503, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        except TimedOut:
            raise _error(504, f"coding took longer than {settings.request_timeout_s:g} s") from None
        digests = [note_hash(t) for t in texts]
        current.remember(predictions, digests)
        logger.debug("coded %d note(s) for %s in %.2f s", len(texts), user.name, time.perf_counter() - started)

        notes = [
            NoteOut.model_validate({**p.to_dict(), "note_hash": d}) for p, d in zip(predictions, digests, strict=True)
        ]
        return CodeResponse(model_version=current.version, explained=explain, notes=notes)

    @app.get(
        "/v1/codes/search",
        response_model=SearchResponse,
        responses={k: _ERRORS[k] for k in (401, 422, 503)},
        tags=["coding"],
    )
    def search(
        user: User_,
        current: Ready,
        q: Annotated[str, Query(min_length=1, max_length=200, description="A code prefix (E11) or words.")],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> SearchResponse:
        """Search the catalog by code prefix ("E11") or words ("heart failure"), to add a code the model missed."""
        assert current.search is not None
        hits = [
            SearchHit(code=e.code, description=e.description, in_model=e.in_model)
            for e in current.search.search(q, limit)
        ]
        return SearchResponse(query=q, hits=hits)

    # ------------------------------------------------------------------ audit
    @app.post(
        "/v1/decisions",
        response_model=DecisionsResponse,
        status_code=201,
        responses={k: _ERRORS[k] for k in (400, 401, 413, 422, 503)},
        tags=["audit"],
    )
    def decide(
        body: Annotated[DecisionsByText | DecisionsByHash, Body()], user: User_, current: Ready
    ) -> DecisionsResponse:
        """Keep the coder's accept / reject / add decisions on one note (the coder is the token's owner)."""
        assert current.search is not None
        text = body.text if isinstance(body, DecisionsByText) else None
        if text is not None and len(text) > settings.max_note_chars:
            raise _error(413, f"note: {len(text)} characters, the limit is {settings.max_note_chars}")
        digest = note_hash(text) if text is not None else body.note_hash  # type: ignore[union-attr]
        decisions = []
        for i, d in enumerate(body.decisions):
            entry = current.search.lookup(d.code)
            if entry is None:
                raise _error(422, f"decisions.{i}.code: {d.code!r} is neither a code of the model nor of its catalog")
            decisions.append(Decision(entry.code, d.action, current.probability(digest, entry.code)))
        keep = text if isinstance(body, DecisionsByText) and body.keep_text else None
        stored = app.state.audit.record(
            coder=user.name,
            note_id=body.note_id,
            digest=digest,
            decisions=decisions,
            model_version=current.version,
            text=keep,
        )
        logger.debug("stored %d decision(s) of %s", len(stored), user.name)
        return DecisionsResponse(stored=[DecisionOut(**r) for r in stored])

    @app.get(
        "/v1/decisions",
        response_model=DecisionsResponse,
        responses={k: _ERRORS[k] for k in (401, 403, 422)},
        tags=["audit"],
    )
    def decisions(
        user: User_,
        note_hash_: Annotated[str | None, Query(alias="note_hash", pattern=r"^[0-9a-f]{64}$")] = None,
        coder: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> DecisionsResponse:
        """Your latest decisions (an admin token may read another coder's)."""
        who = coder or user.name
        if who != user.name and not user.admin:
            raise _error(403, f"{user.name} may not read the decisions of {who}")
        rows = app.state.audit.rows(coder=who, digest=note_hash_, limit=limit)
        return DecisionsResponse(stored=[DecisionOut(**r) for r in rows])

    # ------------------------------------------------------------------ model
    @app.get("/v1/model", response_model=ModelInfo, responses={k: _ERRORS[k] for k in (401, 503)}, tags=["model"])
    def model_info(user: User_, current: Ready) -> ModelInfo:
        """The served system: version, label space, test metrics, model card, limits."""
        coder = current.coder
        assert coder is not None
        header = coder.header
        run = header.get("run") or {}
        return ModelInfo(
            version=current.version,
            kind=coder.kind,
            name=run.get("name") or header.get("name"),
            model_type=(run.get("model") or {}).get("type"),
            label_system=current.system,
            n_codes=len(coder.codes),
            label_space=current.label_summary,
            can_explain=coder.can_explain(),
            suggests_new_codes=coder.kind == "retrieval",
            card=current.card,
            metrics=current.metrics,
            report=coder.path is not None and (coder.path / "report.html").is_file(),  # may be written while serving
            limits={
                "max_note_chars": settings.max_note_chars,
                "max_batch": settings.max_batch,
                "request_timeout_s": settings.request_timeout_s,
                "queue": settings.queue_size,
                "workers": settings.workers,
            },
            coder=user.name,
        )

    @app.get(
        "/v1/model/report",
        response_class=Response,
        responses={
            200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The report (HTML)."},
            404: {"model": ErrorOut, "description": "The bundle has no report.html."},
            401: _ERRORS[401],
            503: _ERRORS[503],
        },
        tags=["model"],
    )
    def model_report(user: User_, current: Ready) -> Response:
        """The served model's HTML report (written by `medcoder report MODEL_DIR`)."""
        path = current.coder.path if current.coder else None
        if path is None or not (path / "report.html").is_file():
            raise _error(404, "this bundle has no report.html: run `medcoder report MODEL_DIR` to write one")
        return HTMLResponse((path / "report.html").read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ the page
    static = _static_dir()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(
            (static / "index.html").read_text(encoding="utf-8"),
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "script-src 'self' 'unsafe-inline'; frame-src 'self' blob:; connect-src 'self'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app
