"""Repository of API tokens. Only a SHA-256 hash of each secret is stored.

Secrets are 256 random bits, so a plain (unsalted) hash is enough: there is no
dictionary to attack. Lookup is by hash; the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from dataclasses import dataclass

from hangar.errors import NextStep, NotFound
from hangar.state.db import Database
from hangar.state.vms import now


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: str
    project: str
    name: str
    role: str
    secret_hash: str
    created_at: str
    last_used_at: str | None


def _record(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118


class TokenRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, token_id: str, project: str, name: str, role: str, secret: str) -> TokenRecord:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (id, project, name, role, secret_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, project, name, role, hash_secret(secret), now()),
            )
        return self.get(token_id)

    def get(self, token_id: str, project: str | None = None) -> TokenRecord:
        rows = self.db.query("SELECT * FROM tokens WHERE id = ?", (token_id,))
        if not rows or (project is not None and rows[0]["project"] != project):
            raise NotFound(
                f"no token with id '{token_id}'",
                hint="list the tokens to see their ids",
                action=NextStep.LIST_TOKENS,
            )
        return _record(rows[0])

    def list(self, project: str | None = None) -> list[TokenRecord]:
        if project is None:
            rows = self.db.query("SELECT * FROM tokens ORDER BY project, created_at")
        else:
            rows = self.db.query(
                "SELECT * FROM tokens WHERE project = ? ORDER BY created_at", (project,)
            )
        return [_record(r) for r in rows]

    def authenticate(self, secret: str) -> TokenRecord | None:
        """The token whose secret is ``secret``, or None."""
        digest = hash_secret(secret)
        rows = self.db.query("SELECT * FROM tokens WHERE secret_hash = ?", (digest,))
        if not rows or not hmac.compare_digest(rows[0]["secret_hash"], digest):
            return None
        return _record(rows[0])

    def touch(self, token_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (now(), token_id))

    def delete(self, token_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
