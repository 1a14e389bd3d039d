"""``create_app``: the FastAPI app of ``medcoder serve`` (the REST service and the coder's web page).

The app is assembled here: its state, start-up and shutdown, middleware, error handlers and routers.
The operations are in ``routes/`` (one module per resource), what they are given in ``deps.py``.
"""

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI

from medcoder.inference.base import Coder
from medcoder.serve.audit import AuditStore
from medcoder.serve.auth import TokenStore
from medcoder.serve.body_limit import BodyLimit
from medcoder.serve.deps import BEARER, known_query
from medcoder.serve.errors import add_error_handlers
from medcoder.serve.routes import audit as audit_routes
from medcoder.serve.routes import coding, service
from medcoder.serve.routes import model as model_routes
from medcoder.serve.settings import ServeSettings
from medcoder.serve.state import ServiceState


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
    state = ServiceState(settings, tokens=tokens, audit=audit)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open(model)
        try:
            yield
        finally:
            state.close()

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
    app.add_middleware(BodyLimit, limit=settings.body_limit)
    add_error_handlers(app)

    app.include_router(service.router)
    # without tokens (loopback only) the schema asks for none
    coder_routes = {"dependencies": [Depends(BEARER)]} if tokens is not None else {}
    for router in (coding.router, audit_routes.router, model_routes.router):
        app.include_router(router, **coder_routes)
    app.mount("/static", service.static_files(), name="static")
    return app
