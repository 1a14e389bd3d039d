"""The served system: ``GET /v1/model`` (identity, label space, test figures, card, limits) and its HTML report."""

import dataclasses

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from medcoder.inference.base import SystemInfo
from medcoder.serve.deps import CurrentUser, Ready
from medcoder.serve.errors import documented, error
from medcoder.serve.schemas import ErrorOut, ModelInfo

router = APIRouter(tags=["model"])

# what /v1/model says of the system as SystemInfo says it, field by field (kind, name, model type, catalog, codes)
_FROM_INFO = [field.name for field in dataclasses.fields(SystemInfo) if field.name in ModelInfo.model_fields]


@router.get("/v1/model", response_model=ModelInfo, responses=documented(401, 503))
def model_info(user: CurrentUser, current: Ready) -> ModelInfo:
    """The served system: version, label space, test metrics, model card, limits."""
    coder, info, settings = current.coder, current.info, current.settings
    assert coder is not None and info is not None  # read once, when the system was loaded
    return ModelInfo(
        version=info.identity,
        **{name: getattr(info, name) for name in _FROM_INFO},
        label_space=current.label_summary,
        can_explain=info.capabilities.explain,
        suggests_new_codes=info.capabilities.new_codes,
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


@router.get(
    "/v1/model/report",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The report (HTML)."},
        404: {"model": ErrorOut, "description": "The bundle has no report.html."},
        **documented(401, 503),
    },
)
def model_report(user: CurrentUser, current: Ready) -> Response:
    """The served model's HTML report (written by `medcoder report MODEL_DIR`)."""
    path = current.coder.path if current.coder else None
    if path is None or not (path / "report.html").is_file():
        raise error(404, "this bundle has no report.html: run `medcoder report MODEL_DIR` to write one")
    return HTMLResponse((path / "report.html").read_text(encoding="utf-8"))
