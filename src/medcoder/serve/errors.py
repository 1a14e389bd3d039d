"""The service's errors: the statuses each operation documents, and one JSON shape for all of them.

Every error is ``{"error": "<one line>"}`` (with ``detail`` on a 422 from validation), never an
echo of the request: a note's text must not come back in an error or reach the log.
"""

import logging
import traceback
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medcoder.errors import MedcoderError
from medcoder.serve.schemas import ErrorOut

logger = logging.getLogger("medcoder.serve")

_ERRORS: dict[int, str] = {
    400: "The body could not be read as text (not UTF-8).",
    401: "No token, or a token nobody has (only when the service uses tokens).",
    403: "Your token does not allow this.",
    413: "A note longer than the limit, more notes than the batch limit, or a body too large.",
    422: "The request does not have the shape this schema gives.",
    503: "Busy (the queue is full; see Retry-After) or still loading the model.",
    504: "The request took longer than the request timeout.",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of an operation that may answer these error statuses (for its OpenAPI schema)."""
    return {status: {"model": ErrorOut, "description": _ERRORS[status]} for status in statuses}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """The exception that answers ``{"error": message}`` with ``status``."""
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


def validation_message(errors: list[dict[str, Any]], body: Any = None) -> tuple[str, list[dict[str, Any]]]:
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


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
        message = "the request body could not be read: send JSON in UTF-8"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, detail = validation_message(list(exc.errors()), exc.body)
    return JSONResponse({"error": message, "detail": detail}, status_code=422)


async def _user_error(request: Request, exc: MedcoderError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=422)


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    # the type and the frames only: an exception's message may quote a note
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("internal error on %s %s: %s\n%s", request.method, request.url.path, type(exc).__name__, frames)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, 500)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"error": ...}``: HTTP errors, invalid requests, bad input, crashes."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(MedcoderError, _user_error)
    app.add_exception_handler(Exception, _crash)
