"""The revisioned store (state/store.py) in hangard's SQLite database.

The revision counter, the keys and the kept history change in one SQLite
transaction per commit, so a crash never leaves a key at a revision the counter
has not reached. Watchers are woken in-process: hangard is the only writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from hangar.state.db import Database
from hangar.state.store import (
    DEFAULT_HISTORY,
    Compare,
    Event,
    EventKind,
    Json,
    Listing,
    Op,
    Put,
    RevisionedStore,
    Store,
    Versioned,
    check_compares,
)


def _versioned(row: sqlite3.Row) -> Versioned[Json]:
    return Versioned(
        row["key"], json.loads(row["value"]), row["create_revision"], row["mod_revision"]
    )


class SqliteStore(RevisionedStore):
    def __init__(self, db: Database, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history)
        self.db = db
        self._keep = history

    def _counters(self) -> tuple[int, int]:
        row = self.db.query("SELECT revision, compacted FROM kv_revision WHERE id = 1")[0]
        return int(row["revision"]), int(row["compacted"])

    def _revision(self) -> int:
        return self._counters()[0]

    def _compacted(self) -> int:
        return self._counters()[1]

    def _get(self, key: str) -> Versioned[Json] | None:
        rows = self.db.query("SELECT * FROM kv WHERE key = ?", (key,))
        return _versioned(rows[0]) if rows else None

    def _list(self, prefix: str) -> Listing[Json]:
        # One transaction: the items and the revision they are as of.
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
            revision = conn.execute("SELECT revision FROM kv_revision WHERE id = 1").fetchone()
        return Listing([_versioned(r) for r in rows], int(revision[0]))

    def _apply(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        with self.db.transaction() as conn:
            current = int(conn.execute("SELECT revision FROM kv_revision").fetchone()[0])
            keys = sorted({c.key for c in compares})
            found = conn.execute(
                f"SELECT key, mod_revision FROM kv WHERE key IN ({','.join('?' * len(keys))})",
                keys,
            ).fetchall()
            check_compares(compares, {r["key"]: r["mod_revision"] for r in found})
            revision = current + 1
            changed = 0
            for op in ops:
                if isinstance(op, Put):
                    value = json.dumps(op.value)
                    conn.execute(
                        "INSERT INTO kv (key, value, create_revision, mod_revision)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                        " value = excluded.value, mod_revision = excluded.mod_revision",
                        (op.key, value, revision, revision),
                    )
                else:
                    value = None
                    if conn.execute("DELETE FROM kv WHERE key = ?", (op.key,)).rowcount == 0:
                        continue
                conn.execute(
                    "INSERT OR REPLACE INTO kv_history (revision, key, value) VALUES (?, ?, ?)",
                    (revision, op.key, value),
                )
                changed += 1
            if not changed:
                return current
            floor = max(revision - self._keep, 1)
            conn.execute(
                "UPDATE kv_revision SET revision = ?, compacted = max(compacted, ?)",
                (revision, floor),
            )
            conn.execute("DELETE FROM kv_history WHERE revision <= ?", (floor,))
        return revision

    def _history(self, prefix: str, after: int) -> list[Event]:
        rows = self.db.query(
            "SELECT * FROM kv_history WHERE revision > ? AND substr(key, 1, ?) = ?"
            " ORDER BY revision, rowid",
            (after, len(prefix), prefix),
        )
        return [
            Event(
                EventKind.DELETE if r["value"] is None else EventKind.PUT,
                r["key"],
                None if r["value"] is None else json.loads(r["value"]),
                int(r["revision"]),
            )
            for r in rows
        ]


def _is_a_store(store: SqliteStore) -> Store:
    return store  # mypy checks that SqliteStore implements Store
