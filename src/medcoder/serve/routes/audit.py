"""The audit: ``POST /v1/decisions`` keeps a coder's accept / reject / add decisions, ``GET`` reads them back."""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Query

from medcoder.serve.audit import Decision, note_hash
from medcoder.serve.deps import Audit, CurrentUser, Ready
from medcoder.serve.errors import documented, error
from medcoder.serve.schemas import DecisionOut, DecisionsByHash, DecisionsByText, DecisionsResponse

logger = logging.getLogger("medcoder.serve")

router = APIRouter(tags=["audit"])


@router.post(
    "/v1/decisions", response_model=DecisionsResponse, status_code=201, responses=documented(400, 401, 413, 422, 503)
)
def decide(
    body: Annotated[DecisionsByText | DecisionsByHash, Body()], user: CurrentUser, current: Ready, audit: Audit
) -> DecisionsResponse:
    """Keep the coder's accept / reject / add decisions on one note (the coder is the token's owner)."""
    assert current.search is not None
    limit = current.settings.max_note_chars
    text = body.text if isinstance(body, DecisionsByText) else None
    if text is not None and len(text) > limit:
        raise error(413, f"note: {len(text)} characters, the limit is {limit}")
    digest = note_hash(text) if text is not None else body.note_hash  # type: ignore[union-attr]
    decisions = []
    for i, d in enumerate(body.decisions):
        entry = current.search.lookup(d.code)
        if entry is None:
            raise error(422, f"decisions.{i}.code: {d.code!r} is neither a code of the model nor of its catalog")
        decisions.append(Decision(entry.code, d.action, current.probability(digest, entry.code)))
    keep = text if isinstance(body, DecisionsByText) and body.keep_text else None
    stored = audit.record(
        coder=user.name,
        note_id=body.note_id,
        digest=digest,
        decisions=decisions,
        model_version=current.version,
        text=keep,
    )
    logger.debug("stored %d decision(s) of %s", len(stored), user.name)
    return DecisionsResponse(stored=[DecisionOut(**r) for r in stored])


@router.get("/v1/decisions", response_model=DecisionsResponse, responses=documented(401, 403, 422))
def decisions(
    user: CurrentUser,
    audit: Audit,
    note_hash_: Annotated[str | None, Query(alias="note_hash", pattern=r"^[0-9a-f]{64}$")] = None,
    coder: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DecisionsResponse:
    """Your latest decisions (an admin token may read another coder's)."""
    who = coder or user.name
    if who != user.name and not user.admin:
        raise error(403, f"{user.name} may not read the decisions of {who}")
    return DecisionsResponse(stored=[DecisionOut(**r) for r in audit.rows(coder=who, digest=note_hash_, limit=limit)])
