"""Repositories of storage pools and volumes."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hangar.errors import Conflict, NextStep, NotFound
from hangar.state.db import Database
from hangar.state.vms import now


@dataclass(frozen=True)
class PoolRecord:
    name: str
    path: str
    created_at: str


@dataclass(frozen=True)
class VolumeRecord:
    id: str
    project: str
    name: str
    pool: str
    format: str
    size: int
    vm_id: str | None
    created_at: str


def _volume(row: sqlite3.Row) -> VolumeRecord:
    return VolumeRecord(
        row["id"], row["project"], row["name"], row["pool"], row["format"], row["size"],
        row["vm_id"], row["created_at"],
    )  # fmt: skip


class PoolRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, name: str, path: str) -> PoolRecord:
        stamp = now()
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO pools (name, path, created_at) VALUES (?, ?, ?)",
                    (name, path, stamp),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a pool named '{name}' or at '{path}' already exists",
                hint="list the storage pools to see which there are",
                action=NextStep.LIST_POOLS,
            ) from exc
        return PoolRecord(name, path, stamp)

    def get(self, name: str) -> PoolRecord:
        rows = self.db.query("SELECT * FROM pools WHERE name = ?", (name,))
        if not rows:
            raise NotFound(
                f"no pool named '{name}'",
                hint="list the storage pools to see which there are",
                action=NextStep.LIST_POOLS,
            )
        return PoolRecord(rows[0]["name"], rows[0]["path"], rows[0]["created_at"])

    def list(self) -> list[PoolRecord]:
        rows = self.db.query("SELECT * FROM pools ORDER BY name")
        return [PoolRecord(r["name"], r["path"], r["created_at"]) for r in rows]

    def delete(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM pools WHERE name = ?", (name,))


class VolumeRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, record: VolumeRecord) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO volumes (id, project, name, pool, format, size, vm_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.project, record.name, record.pool, record.format,
                     record.size, record.vm_id, record.created_at),
                )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a volume named '{record.name}' already exists in project '{record.project}'",
                hint="pick another name",
            ) from exc

    def get(self, name: str, project: str) -> VolumeRecord:
        rows = self.db.query(
            "SELECT * FROM volumes WHERE project = ? AND name = ?", (project, name)
        )
        if not rows:
            raise NotFound(
                f"no volume named '{name}'",
                hint="list the volumes to see which there are",
                details={"project": project},
                action=NextStep.LIST_VOLUMES,
            )
        return _volume(rows[0])

    def list(
        self,
        *,
        project: str | None = None,
        pool: str | None = None,
        vm_id: str | None = None,
    ) -> list[VolumeRecord]:
        """Volumes matching every filter given (None: any)."""
        where, params = [], []
        for column, value in (("project", project), ("pool", pool), ("vm_id", vm_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM volumes" + (" WHERE " + " AND ".join(where) if where else "")
        return [_volume(r) for r in self.db.query(sql + " ORDER BY project, name", tuple(params))]

    def total_size(self, project: str) -> int:
        rows = self.db.query(
            "SELECT COALESCE(SUM(size), 0) FROM volumes WHERE project = ?", (project,)
        )
        return int(rows[0][0])

    def set_vm(self, volume_id: str, vm_id: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE volumes SET vm_id = ? WHERE id = ?", (vm_id, volume_id))

    def set_size(self, volume_id: str, size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE volumes SET size = ? WHERE id = ?", (size, volume_id))

    def delete(self, volume_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
