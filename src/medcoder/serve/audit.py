"""The audit store: every coder's decision, in a real database (SQLite by default, any SQLAlchemy URL).

One row per decision: who (from the token), when (UTC), which note (its id and
the SHA-256 of its text), which code, accept / reject / add, the model version
and the probability the model gave. The note's text is kept (table ``notes``)
only when the coder asked for it, so that ``medcoder feedback export`` can turn
the decisions into training data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcoder.errors import MedcoderError

ACTIONS = ("accept", "reject", "add")


def note_hash(text: str) -> str:
    """The SHA-256 of a note's text (UTF-8): how the audit names a note without keeping it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Decision:
    code: str
    action: str
    probability: float | None = None


class AuditStore:
    """Decisions and (optionally) note texts in the database at ``url``."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = url
        try:
            # hide_parameters: a note kept for training never shows in a SQL log line or error message
            options: dict[str, Any] = {"future": True, "pool_pre_ping": True, "hide_parameters": True}
            if url.startswith("sqlite"):
                options["connect_args"] = {"check_same_thread": False, "timeout": 30}
                path = sa.engine.make_url(url).database
                if path and path != ":memory:":
                    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, **options)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise MedcoderError(f"database URL {_safe(url)}: {exc}") from None
        meta = sa.MetaData()
        self.decisions = sa.Table(
            "medcoder_decisions",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("coder", sa.String(64), nullable=False, index=True),
            sa.Column("note_id", sa.String(200)),
            sa.Column("note_hash", sa.String(64), nullable=False, index=True),
            sa.Column("code", sa.String(40), nullable=False),
            sa.Column("action", sa.String(8), nullable=False),
            sa.Column("model_version", sa.String(200), nullable=False),
            sa.Column("probability", sa.Float),
        )
        self.notes = sa.Table(
            "medcoder_notes",
            meta,
            sa.Column("note_hash", sa.String(64), primary_key=True),
            sa.Column("note_id", sa.String(200)),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        try:
            meta.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise MedcoderError(
                f"database {_safe(url)}: cannot open or create the audit tables: {exc.orig or exc}"
            ) from None

    def record(
        self,
        *,
        coder: str,
        note_id: str | None,
        digest: str,
        decisions: Sequence[Decision],
        model_version: str,
        text: str | None = None,
    ) -> list[dict[str, Any]]:
        """Store ``decisions`` in one transaction (and the note's text when given); return the rows stored."""
        import sqlalchemy as sa

        now = dt.datetime.now(dt.UTC)
        stored: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            if text is not None:
                exists = conn.execute(sa.select(self.notes.c.note_hash).where(self.notes.c.note_hash == digest)).first()
                if exists is None:
                    conn.execute(
                        self.notes.insert().values(note_hash=digest, note_id=note_id, text=text, created_at=now)
                    )
            for d in decisions:
                row = {
                    "created_at": now,
                    "coder": coder,
                    "note_id": note_id,
                    "note_hash": digest,
                    "code": d.code,
                    "action": d.action,
                    "model_version": model_version,
                    "probability": d.probability,
                }
                result = conn.execute(self.decisions.insert().values(**row))
                stored.append({"id": int(result.inserted_primary_key[0]), **row, "created_at": now.isoformat()})
        return stored

    def rows(
        self, *, coder: str | None = None, digest: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Decisions, oldest first (optionally of one coder / one note; ``limit``: the latest ones)."""
        import sqlalchemy as sa

        t = self.decisions
        query = sa.select(t)
        if coder is not None:
            query = query.where(t.c.coder == coder)
        if digest is not None:
            query = query.where(t.c.note_hash == digest)
        query = query.order_by(t.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            found = [dict(row._mapping) for row in conn.execute(query)]
        found.reverse()
        for row in found:
            stamp = row["created_at"]
            if stamp.tzinfo is None:  # SQLite keeps no zone: we wrote UTC
                stamp = stamp.replace(tzinfo=dt.UTC)
            row["created_at"] = stamp.isoformat()
        return found

    def texts(self, digests: Iterable[str]) -> dict[str, str]:
        import sqlalchemy as sa

        wanted = list(dict.fromkeys(digests))
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    sa.select(self.notes.c.note_hash, self.notes.c.text).where(self.notes.c.note_hash.in_(chunk))
                )
                out.update({h: text for h, text in rows})
        return out

    def close(self) -> None:
        self.engine.dispose()


def feedback_records(
    store: AuditStore, *, coder: str | None = None, with_text_only: bool = False
) -> list[dict[str, Any]]:
    """The coders' decisions as training records: per note, the codes its last decisions keep.

    A code's latest decision counts (accept or add: a label; reject: listed in
    ``rejected``). ``text`` is there only where the note's text was kept.
    """
    notes: dict[str, dict[str, Any]] = {}
    for row in store.rows(coder=coder):
        note = notes.setdefault(row["note_hash"], {"id": row["note_id"], "codes": {}, "coders": {}, "models": {}})
        note["id"] = note["id"] or row["note_id"]
        note["codes"][row["code"]] = row["action"]
        note["coders"][row["coder"]] = None
        note["models"][row["model_version"]] = None
    texts = store.texts(notes)
    records = []
    for digest, note in notes.items():
        if with_text_only and digest not in texts:
            continue
        record: dict[str, Any] = {
            "id": note["id"] or f"sha256:{digest[:16]}",
            "note_hash": digest,
            "labels": [c for c, action in note["codes"].items() if action in ("accept", "add")],
            "rejected": [c for c, action in note["codes"].items() if action == "reject"],
            "coders": list(note["coders"]),
            "model_versions": list(note["models"]),
        }
        if digest in texts:
            record["text"] = texts[digest]
        records.append(record)
    return records


def export_feedback(
    url: str, output: Path, *, coder: str | None = None, with_text_only: bool = False
) -> dict[str, int]:
    """Write the decisions of the audit database at ``url`` as a JSONL training file (atomically)."""
    from medcoder.io import atomic_write_text

    store = AuditStore(url)
    try:
        records = feedback_records(store, coder=coder, with_text_only=with_text_only)
    finally:
        store.close()
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return {
        "notes": len(records),
        "with_text": sum("text" in r for r in records),
        "labels": sum(len(r["labels"]) for r in records),
        "rejected": sum(len(r["rejected"]) for r in records),
    }


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL too broken to parse is shown as given
        return url
