"""API tokens: a JSON file of hashed per-coder tokens; the coder's identity comes from the token alone.

The file holds ``{"tokens": [{"user": "alice", "sha256": "<hex>", "admin": false}, ...]}``;
a token itself is never stored, only its SHA-256 (tokens are 32 random bytes, so
a fast hash is enough). ``medcoder token add NAME --tokens FILE`` appends one and
prints the token once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from medcoder.errors import InputError, MedcoderError
from medcoder.io import atomic_write_json, read_json_file

_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The coders allowed in, by the hash of their token."""

    def __init__(self, entries: dict[str, User]) -> None:
        self._by_hash = entries

    @classmethod
    def read(cls, path: Path) -> TokenStore:
        if not path.is_file():
            raise MedcoderError(f"{path}: no such tokens file (`medcoder token add NAME --tokens {path}` creates it)")
        data = read_json_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise InputError('expected {"tokens": [{"user": ..., "sha256": ...}, ...]}', path=path)
        entries: dict[str, User] = {}
        for i, row in enumerate(data["tokens"]):
            if not isinstance(row, dict):
                raise InputError("expected an object", path=path, record=str(i))
            user, digest = row.get("user"), row.get("sha256")
            if not isinstance(user, str) or not _USER.match(user):
                raise InputError("user must be 1-64 letters, digits or _.@-", path=path, record=str(i), field="user")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise InputError("sha256 must be 64 hex digits", path=path, record=str(i), field="sha256")
            entries[digest] = User(user, bool(row.get("admin", False)))
        if not entries:
            raise InputError("holds no token: nobody could sign in", path=path)
        return cls(entries)

    def user(self, token: str) -> User | None:
        """The coder whose token this is (None: no one's); compared in constant time."""
        digest = hash_token(token)
        found = None
        for known, user in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = user
        return found


def add_token(path: Path, user: str, *, admin: bool = False) -> str:
    """Append a new token for ``user`` to the tokens file (created if missing); return the token."""
    if not _USER.match(user):
        raise MedcoderError(f"user name {user!r}: use 1-64 letters, digits or _.@-")
    data = read_json_file(path) if path.exists() else {"tokens": []}
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise InputError('expected {"tokens": [...]}', path=path)
    token = secrets.token_urlsafe(32)
    data["tokens"].append({"user": user, "sha256": hash_token(token), "admin": admin})
    atomic_write_json(path, data)
    path.chmod(0o600)
    return token
