"""Coding: ``POST /v1/code`` (ranked codes, probabilities and evidence of notes) and ``GET /v1/codes/search``."""

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Body, Query

from medcoder.serve.audit import note_hash
from medcoder.serve.deps import CurrentUser, Ready
from medcoder.serve.errors import documented, error
from medcoder.serve.schemas import CodeBatchRequest, CodeOneRequest, CodeResponse, NoteOut, SearchHit, SearchResponse
from medcoder.serve.state import CodeJob
from medcoder.serve.work import Busy, TimedOut

logger = logging.getLogger("medcoder.serve")

router = APIRouter(tags=["coding"])


@router.post("/v1/code", response_model=CodeResponse, responses=documented(400, 401, 413, 422, 503, 504))
async def code(
    body: Annotated[CodeOneRequest | CodeBatchRequest, Body()], user: CurrentUser, current: Ready
) -> CodeResponse:
    """Code one note (`text`) or a batch (`notes`): ranked codes, probabilities, evidence spans."""
    settings = current.settings
    if isinstance(body, CodeOneRequest):
        texts, ids = [body.text], [body.id]
    else:
        texts, ids = [n.text for n in body.notes], [n.id for n in body.notes]
    if len(texts) > settings.max_batch:
        raise error(413, f"{len(texts)} notes in one request: the limit is {settings.max_batch}")
    for i, text in enumerate(texts):
        if len(text) > settings.max_note_chars:
            raise error(413, f"note {i}: {len(text)} characters, the limit is {settings.max_note_chars}")
    top_k = settings.top_k if body.top_k is None else body.top_k  # at most 200: the schema says so
    coder, pool = current.coder, current.pool
    assert coder is not None and pool is not None
    explain = body.explain and coder.capabilities.explain
    started = time.perf_counter()
    try:
        job = CodeJob(texts, ids, top_k, explain)
        predictions = await pool.run(job, size=len(texts), timeout=settings.request_timeout_s)
    except Busy as exc:
        raise error(503, str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except TimedOut:
        raise error(504, f"coding took longer than {settings.request_timeout_s:g} s") from None
    digests = [note_hash(t) for t in texts]
    current.remember(predictions, digests)
    logger.debug("coded %d note(s) for %s in %.2f s", len(texts), user.name, time.perf_counter() - started)

    notes = [NoteOut.model_validate({**p.to_dict(), "note_hash": d}) for p, d in zip(predictions, digests, strict=True)]
    return CodeResponse(model_version=current.version, explained=explain, notes=notes)


@router.get("/v1/codes/search", response_model=SearchResponse, responses=documented(401, 422, 503))
def search(
    user: CurrentUser,
    current: Ready,
    q: Annotated[str, Query(min_length=1, max_length=200, description="A code prefix (E11) or words.")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResponse:
    """Search the catalog by code prefix ("E11") or words ("heart failure"), to add a code the model missed."""
    assert current.search is not None
    hits = [
        SearchHit(code=e.code, description=e.description, in_model=e.in_model) for e in current.search.search(q, limit)
    ]
    return SearchResponse(query=q, hits=hits)
