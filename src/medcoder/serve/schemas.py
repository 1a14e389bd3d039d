"""The JSON the service reads and writes (its OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 3.0 is one (a float with no fraction); true and "3" are not (the models are strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_TEXT = r"\S"  # at least one character that is not white space
_NOTE_ID = Field(None, max_length=200, description="Your id of the note (kept in the audit, never its text).")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no false for 0


class NoteIn(_Strict):
    id: str | None = _NOTE_ID
    text: str = Field(pattern=_TEXT, description="The note's text (longer than the service's limit: 413).")


class _Options(_Strict):
    top_k: Annotated[int, Ge(0), Le(200), BeforeValidator(_integral)] | None = Field(
        None, description="Codes listed per note besides the predicted ones (default: the service's)."
    )
    explain: bool = Field(True, description="Add the evidence spans (character offsets into the note) of every code.")


class CodeOneRequest(_Options):
    """One note."""

    id: str | None = _NOTE_ID
    text: str = Field(pattern=_TEXT)


class CodeBatchRequest(_Options):
    """Several notes (at most the service's batch size: 413)."""

    notes: list[NoteIn] = Field(min_length=1)


class EvidenceOut(BaseModel):
    start: int = Field(description="Offset of the span's first character in the note, in Unicode code points.")
    end: int
    text: str
    weight: float
    source: str | None = Field(None, description="The signal that found it, in a system of several.")


class CodeOut(BaseModel):
    code: str
    description: str | None
    probability: float
    predicted: bool = Field(description="Above the threshold tuned on dev.")
    rank: int
    evidence: list[EvidenceOut] = []


class NoteOut(BaseModel):
    id: str | None
    note_hash: str = Field(description="SHA-256 of the note's text: how the audit names the note.")
    codes: list[CodeOut]
    new_codes: list[CodeOut] | None = Field(None, description="Codes never seen in training, suggested apart.")


class CodeResponse(BaseModel):
    model_version: str
    explained: bool = Field(description="Whether evidence was computed (some models cannot explain).")
    notes: list[NoteOut]


class SearchHit(BaseModel):
    code: str
    description: str
    in_model: bool = Field(description="The served system scores this code.")


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHit]


class DecisionIn(_Strict):
    code: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
    action: Literal["accept", "reject", "add"]


class _DecisionsBase(_Strict):
    note_id: str | None = _NOTE_ID
    decisions: list[DecisionIn] = Field(min_length=1, max_length=500)


class DecisionsByText(_DecisionsBase):
    """Decisions on a note sent with its text (hashed; kept only with ``keep_text``)."""

    text: str = Field(pattern=_TEXT)
    keep_text: bool = Field(False, description="Keep the note's text for `medcoder feedback export` (training data).")


class DecisionsByHash(_DecisionsBase):
    """Decisions on a note named by the ``note_hash`` that ``/v1/code`` returned."""

    note_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class DecisionOut(BaseModel):
    id: int
    created_at: str
    coder: str
    note_id: str | None
    note_hash: str
    code: str
    action: str
    model_version: str
    probability: float | None


class DecisionsResponse(BaseModel):
    stored: list[DecisionOut]


class ModelInfo(BaseModel):
    version: str
    kind: str
    name: str | None
    model_type: str | None
    label_system: str
    n_codes: int
    label_space: dict[str, Any] = Field(
        description="Catalog, level and filters, train notes, codes by number of train notes, the most frequent codes."
    )
    can_explain: bool
    suggests_new_codes: bool
    card: str | None = Field(description="The bundle's model card (Markdown).")
    metrics: dict[str, Any]
    report: bool = Field(description="Whether GET /v1/model/report has an HTML report (medcoder report MODEL_DIR).")
    limits: dict[str, Any]
    coder: str = Field(description="Who you are, by your token.")


class ErrorOut(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: str
