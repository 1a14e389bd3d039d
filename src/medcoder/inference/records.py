"""The coded-note record: what every saved system returns for a note, in Python and (as JSON) everywhere else.

``Coder.predict`` returns :class:`NotePrediction` records; batch prediction writes their
:meth:`NotePrediction.to_dict`, and the service's response schema is built from the same classes
(``serve/schemas.py``): a field and its description are declared here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

# Plain dataclasses, not pydantic models: ``Coder.predict`` builds one CodeScore per listed code and note, and
# validating each would slow every prediction. The ``Field`` descriptions are read only to build schemas.


@dataclass(frozen=True)
class Evidence:
    """A character span ``text[start:end]`` of the note and how strongly it supports the code."""

    start: Annotated[
        int, Field(description="Offset of the span's first character in the note, in Unicode code points.")
    ]
    end: int
    text: str
    weight: float
    source: Annotated[str | None, Field(description="The signal that found it, in a system of several.")] = None


@dataclass(frozen=True)
class CodeScore:
    """One code for one note."""

    code: str
    description: str | None
    probability: float
    predicted: Annotated[
        bool, Field(description="Above the threshold tuned on dev (single-label: the top-ranked code).")
    ]
    rank: Annotated[int, Field(description="1: the highest probability.")]
    evidence: Annotated[
        list[Evidence] | None, Field(description="The text spans behind the code (only when explained).")
    ] = None


@dataclass(frozen=True)
class NotePrediction:
    """Ranked codes for one note; ``codes`` holds the predicted ones and, if asked, the top-k."""

    id: str | None
    codes: list[CodeScore]
    # only systems that know the whole catalog suggest them
    new_codes: Annotated[
        list[CodeScore] | None, Field(description="Codes never seen in training, suggested apart.")
    ] = None

    @property
    def predicted(self) -> list[CodeScore]:
        return [c for c in self.codes if c.predicted]

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON: the fields in their order, ``evidence`` only when explained, ``source`` when set.

        Written out by hand: dataclasses.asdict deep-copies recursively and took a quarter of batch
        prediction's time per note. ``tests/test_serve.py`` fails when a field is missing here.
        """

        def span(e: Evidence) -> dict[str, Any]:
            out = {"start": e.start, "end": e.end, "text": e.text, "weight": e.weight}
            if e.source:  # a span's source is named only by systems of several signals
                out["source"] = e.source
            return out

        def rows(items: list[CodeScore]) -> list[dict[str, Any]]:
            out = []
            for c in items:
                row = {
                    "code": c.code,
                    "description": c.description,
                    "probability": c.probability,
                    "predicted": c.predicted,
                    "rank": c.rank,
                }
                if c.evidence is not None:  # only explained predictions carry the key
                    row["evidence"] = [span(e) for e in c.evidence]
                out.append(row)
            return out

        result = {"id": self.id, "codes": rows(self.codes)}
        if self.new_codes is not None:
            result["new_codes"] = rows(self.new_codes)
        return result
