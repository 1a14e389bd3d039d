"""User-facing errors.

Every error caused by bad input (a file, a record, a config key) is a
``MedcoderError``; the CLI prints it as one line and exits non-zero, without a
traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class MedcoderError(Exception):
    """An error the user can fix: bad input, bad config, missing file."""


class InputError(MedcoderError):
    """A problem in an input file, located as precisely as we can.

    The message reads ``FILE:LINE: [record ID:] [field FIELD:] what was wrong``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        record: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.record = record
        self.field = field
        self.detail = message
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if record is not None:
            where.append(f"record {record!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(MedcoderError):
    """A config that does not validate (unknown key, wrong type, bad value)."""


class BundleError(MedcoderError):
    """A model directory that is missing, incomplete or not ours."""
