"""Repository of projects (tenants) and their quotas."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hangar.errors import Conflict, NextStep, NotFound
from hangar.state.db import Database
from hangar.state.vms import now

QUOTA_KEYS = ("max_instances", "max_cpus", "max_memory", "max_disk")


@dataclass(frozen=True)
class ProjectRecord:
    name: str
    description: str
    max_instances: int | None
    max_cpus: int | None
    max_memory: int | None
    max_disk: int | None
    created_at: str

    def quota(self, key: str) -> int | None:
        value: int | None = getattr(self, key)
        return value


def _record(row: sqlite3.Row) -> ProjectRecord:
    return ProjectRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118


class ProjectRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, name: str, description: str = "") -> ProjectRecord:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO projects (name, description, created_at) VALUES (?, ?, ?)",
                    (name, description, now()),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a project named '{name}' already exists", hint="pick another name"
            ) from exc
        return self.get(name)

    def find(self, name: str) -> ProjectRecord | None:
        rows = self.db.query("SELECT * FROM projects WHERE name = ?", (name,))
        return _record(rows[0]) if rows else None

    def get(self, name: str) -> ProjectRecord:
        record = self.find(name)
        if record is None:
            raise NotFound(
                f"no project named '{name}'",
                hint="list the projects to see which there are",
                action=NextStep.LIST_PROJECTS,
            )
        return record

    def list(self) -> list[ProjectRecord]:
        return [_record(r) for r in self.db.query("SELECT * FROM projects ORDER BY name")]

    def set_quotas(self, name: str, quotas: dict[str, int | None]) -> ProjectRecord:
        self.get(name)
        keys = [k for k in quotas if k in QUOTA_KEYS]
        if keys:
            with self.db.transaction() as conn:
                conn.execute(
                    f"UPDATE projects SET {', '.join(f'{k} = ?' for k in keys)} WHERE name = ?",
                    (*[quotas[k] for k in keys], name),
                )
        return self.get(name)

    def uplinks(self, name: str) -> tuple[str, ...]:
        rows = self.db.query(
            "SELECT uplink FROM project_uplinks WHERE project = ? ORDER BY uplink", (name,)
        )
        return tuple(r["uplink"] for r in rows)

    def set_uplinks(self, name: str, uplinks: tuple[str, ...]) -> tuple[str, ...]:
        self.get(name)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM project_uplinks WHERE project = ?", (name,))
            conn.executemany(
                "INSERT INTO project_uplinks (project, uplink) VALUES (?, ?)",
                [(name, u) for u in sorted(set(uplinks))],
            )
        return self.uplinks(name)

    def delete(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM projects WHERE name = ?", (name,))
