"""The audit log: one row per change anyone asked for, with its result."""

from __future__ import annotations

import sqlite3

from pydantic import BaseModel

from hangar.state.db import Database
from hangar.state.vms import now


class AuditEntry(BaseModel):
    seq: int
    at: str
    project: str
    actor_id: str
    actor_name: str
    action: str
    resource: str
    result: str
    status: int
    message: str


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(**{k: row[k] for k in row.keys()})  # noqa: SIM118


class AuditRepository:
    def __init__(self, db: Database):
        self.db = db

    def append(
        self,
        *,
        project: str,
        actor_id: str,
        actor_name: str,
        action: str,
        resource: str,
        status: int,
        message: str = "",
    ) -> AuditEntry:
        result = "success" if status < 400 else "error"
        stamp = now()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO audit (at, project, actor_id, actor_name, action, resource, result,"
                " status, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stamp, project, actor_id, actor_name, action, resource, result, status, message),
            )
            seq = int(cursor.lastrowid or 0)
        return AuditEntry(
            seq=seq,
            at=stamp,
            project=project,
            actor_id=actor_id,
            actor_name=actor_name,
            action=action,
            resource=resource,
            result=result,
            status=status,
            message=message,
        )

    def prune(self, *, keep_newest: int, older_than: str) -> int:
        """Delete entries written before ``older_than`` (an ISO timestamp, as ``at``
        holds) and, in each scope (a project, or ``-``), those beyond its newest
        ``keep_newest``: one project's traffic never pushes another's entries out.
        How many went."""
        with self.db.transaction() as conn:
            gone = conn.execute("DELETE FROM audit WHERE at < ?", (older_than,)).rowcount
            scopes = [row[0] for row in conn.execute("SELECT DISTINCT project FROM audit")]
            for project in scopes:
                # The newest entry past the limit (index audit_project: project, seq).
                row = conn.execute(
                    "SELECT seq FROM audit WHERE project = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                    (project, keep_newest),
                ).fetchone()
                if row is not None:
                    gone += conn.execute(
                        "DELETE FROM audit WHERE project = ? AND seq <= ?", (project, row[0])
                    ).rowcount
        return int(gone)

    def list(self, project: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, oldest first."""
        if project is None:
            rows = self.db.query("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self.db.query(
                "SELECT * FROM audit WHERE project = ? ORDER BY seq DESC LIMIT ?", (project, limit)
            )
        return [_entry(r) for r in reversed(rows)]
