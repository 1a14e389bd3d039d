"""The JSON the service reads and writes (its OpenAPI schema is generated from these).

A coded note's models (``EvidenceOut``, ``CodeOut``, ``NoteOut``) are built from the records
``Coder.predict`` returns (``inference/records.py``): a field added there is in the API with no edit here.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from medcoder.inference.records import CodeScore, Evidence, NotePrediction


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


def _swapped(annotation: Any, nested: Mapping[type, type[BaseModel]]) -> Any:
    """``annotation`` with each record of ``nested`` replaced by its model: ``list[CodeScore] | None`` ->
    ``list[CodeOut] | None`` (``Annotated`` metadata, the field's description, kept)."""
    if annotation in nested:
        return nested[annotation]
    args = get_args(annotation)
    origin = get_origin(annotation)
    if not args:
        return annotation
    if origin is Annotated:
        return Annotated[(_swapped(args[0], nested), *annotation.__metadata__)]
    inner = tuple(_swapped(arg, nested) for arg in args)
    if origin in (Union, UnionType):
        return functools.reduce(operator.or_, inner)
    return origin[inner]


def _response_model(
    name: str,
    record: type,
    nested: Mapping[type, type[BaseModel]] | None = None,
    *,
    changed: Mapping[str, tuple[Any, Any]] | None = None,
    added_after: Mapping[str, Mapping[str, tuple[Any, Any]]] | None = None,
) -> type[BaseModel]:
    """A response model of the dataclass ``record``: its fields in their order, with their types, defaults and
    descriptions; ``nested`` maps the records it holds to their models.

    The API's own differences are named: ``changed`` gives a field another ``(type, default)``, in its place;
    ``added_after[field]`` adds fields the record lacks, right after ``field``.
    """
    changed, added_after = changed or {}, added_after or {}
    names = [f.name for f in dataclasses.fields(record)]
    if unknown := (set(changed) | set(added_after)) - set(names):
        raise TypeError(f"{record.__name__} has no field {sorted(unknown)[0]!r}")  # a record field was renamed
    hints = get_type_hints(record, include_extras=True)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        default = ... if field.default is dataclasses.MISSING else field.default
        fields[field.name] = changed.get(field.name) or (_swapped(hints[field.name], nested or {}), default)
        fields.update(added_after.get(field.name, {}))
    return create_model(name, __module__=__name__, **fields)


EvidenceOut = _response_model("EvidenceOut", Evidence)
CodeOut = _response_model(
    "CodeOut",
    CodeScore,
    {Evidence: EvidenceOut},
    # clients always get the key: an empty list when the evidence was not asked for or cannot be given
    changed={"evidence": (list[EvidenceOut], Field([], description="The text spans behind the code."))},
)
NoteOut = _response_model(
    "NoteOut",
    NotePrediction,
    {CodeScore: CodeOut},
    added_after={
        "id": {"note_hash": (str, Field(description="SHA-256 of the note's text: how the audit names the note."))}
    },
)


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
