"""The SQLite database: one file, WAL mode, schema migrations by ``PRAGMA user_version``."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hangar.state.migrations import MIGRATIONS


class Database:
    """A serialised connection shared by hangard's threads.

    hangard is one process with one event loop; a lock around the connection is
    simpler and faster than a pool for its small, short transactions.
    """

    def __init__(self, path: Path | str):
        self.path = path
        # Configs, user-data, audit and token hashes: root's alone (with its -wal
        # and -shm, which SQLite creates with the database file's mode).
        Path(path).touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL never corrupts the database; a power cut may lose the
        # last transactions, which reconcile repairs from QEMU's truth. FULL cost
        # an fsync of 2-15 ms on every state change of a launch.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply every migration newer than the database, each in its own transaction.

        Foreign keys are off meanwhile, as SQLite prescribes for rebuilding a table
        (https://www.sqlite.org/lang_altertable.html#otheralter): else dropping the
        old table would run the ON DELETE actions of the tables that reference it.
        They are checked once all migrations are in.
        """
        with self._lock:
            if self.schema_version >= len(MIGRATIONS):
                return
            self._conn.execute("PRAGMA foreign_keys=OFF")
            try:
                for version, statements in enumerate(MIGRATIONS, start=1):
                    if self.schema_version >= version:
                        continue
                    with self.transaction() as conn:
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version={version}")
                broken = self._conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migrations left broken references: {broken[:5]}")
            finally:
                self._conn.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
