"""The service itself: ``/health``, ``/ready``, and the coder's web page (``/`` and its ``/static`` files)."""

import importlib.resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from medcoder.serve.deps import Ready
from medcoder.serve.errors import documented
from medcoder.serve.schemas import Health

router = APIRouter(tags=["service"])

_STATIC = Path(str(importlib.resources.files("medcoder.serve") / "static"))
# the page runs only its own scripts and styles and talks only to this service
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; frame-src 'self' blob:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/health", response_model=Health)
def health() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses=documented(503))
def ready(current: Ready) -> Health:
    """The model is loaded and the catalog search built."""
    return Health(status="ready")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse((_STATIC / "index.html").read_text(encoding="utf-8"), headers=_PAGE_HEADERS)


def static_files() -> StaticFiles:
    """The page's scripts and styles, for ``app.mount("/static", ...)`` (a router cannot carry a mount)."""
    return StaticFiles(directory=_STATIC)
