"""What a served workbench may do: limits, access and where decisions are kept."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medcoder.errors import MedcoderError

DEFAULT_DATABASE = "sqlite:///medcoder-audit.sqlite"


class ServeSettings(BaseModel):
    """Options of ``medcoder serve`` (each one a command-line flag)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # bearer tokens, one per coder (``medcoder token add``); required unless bound to loopback
    tokens_file: Path | None = None
    # any SQLAlchemy URL: sqlite (embedded, the default, a file in the working folder) or postgresql+psycopg://...
    database_url: str = DEFAULT_DATABASE
    max_note_chars: int = Field(200_000, ge=1)  # a longer note is refused with 413
    max_batch: int = Field(64, ge=1)  # more notes in one request: 413
    max_body_bytes: int = Field(0, ge=0)  # 0: derived from the two limits above
    workers: int = Field(1, ge=1)  # inference threads (a model call uses every core it is given)
    queue_size: int = Field(8, ge=0)  # requests waiting for a worker; one more gets 503 + Retry-After
    batch_notes: int = Field(16, ge=1)  # waiting requests coded together in one model call, up to this many notes
    request_timeout_s: float = Field(60.0, gt=0)  # a request waiting or running longer gets 504
    top_k: int = Field(15, ge=0, le=200)  # codes listed per note by default (besides the predicted ones)

    @property
    def body_limit(self) -> int:
        """The largest request body accepted (bytes): a full batch of the longest notes, JSON-escaped."""
        return self.max_body_bytes or (self.max_batch * self.max_note_chars * 6 + 64 * 1024)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check_access(self) -> None:
        """Refuse to serve beyond this machine without tokens."""
        if not self.loopback and self.tokens_file is None:
            raise MedcoderError(
                f"--host {self.host} is reachable from other machines: give --tokens FILE "
                "(one hashed token per coder; `medcoder token add NAME --tokens FILE` makes one)"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
