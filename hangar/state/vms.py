"""Repository of VM rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hangar.errors import Conflict, NextStep, NotFound
from hangar.names import DEFAULT_PROJECT as DEFAULT_PROJECT  # re-exported
from hangar.spec.vm import VMConfig
from hangar.state.db import Database

# Called after every change of a VM row: (record after the change, or None when deleted
# together with the record before it). The events stream hooks in here, so every state
# change (lifecycle actions, the supervisor's exit handler, reconcile) is seen.
ChangeListener = Callable[["VMRecord | None", "VMRecord | None"], None]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class VMRecord:
    config: VMConfig
    state: str
    state_reason: str
    created_at: str
    updated_at: str
    project: str = DEFAULT_PROJECT

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name


# Parsed configs by their JSON text: a config never changes after the row is written
# (only state does), and parsing is most of the time of listing 1,000 VMs.
_CONFIGS: dict[str, VMConfig] = {}
_CONFIG_CACHE_MAX = 10_000


def _config(text: str) -> VMConfig:
    config = _CONFIGS.get(text)
    if config is None:
        config = VMConfig.model_validate_json(text)
        if len(_CONFIGS) >= _CONFIG_CACHE_MAX:
            _CONFIGS.clear()
        _CONFIGS[text] = config
    return config


def _record(row: sqlite3.Row) -> VMRecord:
    return VMRecord(
        config=_config(row["config"]),
        state=row["state"],
        state_reason=row["state_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        project=row["project"],
    )


class VMRepository:
    def __init__(self, db: Database):
        self.db = db
        self.listeners: list[ChangeListener] = []

    def _changed(self, before: VMRecord | None, after: VMRecord | None) -> None:
        for listener in self.listeners:
            listener(before, after)

    def insert(self, config: VMConfig, state: str, project: str = DEFAULT_PROJECT) -> VMRecord:
        stamp = now()
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO vms (id, project, name, config, state, state_reason, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, '', ?, ?)",
                    (
                        config.id,
                        project,
                        config.name,
                        config.model_dump_json(),
                        state,
                        stamp,
                        stamp,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a VM named '{config.name}' already exists in project '{project}'",
                hint="pick another name, or delete the existing VM first",
            ) from exc
        record = VMRecord(config, state, "", stamp, stamp, project)
        self._changed(None, record)
        return record

    def get(self, name: str, project: str = DEFAULT_PROJECT) -> VMRecord:
        record = self.find(name, project)
        if record is None:
            raise NotFound(
                f"no VM named '{name}' in project '{project}'",
                hint="list the VMs to see which there are",
                details={"project": project},
                action=NextStep.LIST_VMS,
            )
        return record

    def find(self, name: str, project: str = DEFAULT_PROJECT) -> VMRecord | None:
        rows = self.db.query("SELECT * FROM vms WHERE project = ? AND name = ?", (project, name))
        return _record(rows[0]) if rows else None

    def by_id(self, vm_id: str) -> VMRecord | None:
        rows = self.db.query("SELECT * FROM vms WHERE id = ?", (vm_id,))
        return _record(rows[0]) if rows else None

    def list(self, project: str | None = None) -> list[VMRecord]:
        """The VMs of ``project``, or of every project when it is None."""
        if project is None:
            rows = self.db.query("SELECT * FROM vms ORDER BY project, name")
        else:
            rows = self.db.query("SELECT * FROM vms WHERE project = ? ORDER BY name", (project,))
        return [_record(r) for r in rows]

    def count(self, project: str) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM vms WHERE project = ?", (project,))[0][0])

    def set_config(self, config: VMConfig) -> None:
        """Replace a VM's stored config (same id and name): NICs, volumes, disk size."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE vms SET config = ?, updated_at = ? WHERE id = ?",
                (config.model_dump_json(), now(), config.id),
            )

    def move(self, vm_id: str, project: str, config: VMConfig) -> VMRecord:
        """Give VM ``vm_id`` a new project and config (its name among them), in one
        change: a claimed standby VM (services/templates/standby.py). Listeners see it
        leave its old project and arrive in the new one."""
        before = self.by_id(vm_id)
        if before is None:
            raise NotFound(f"no VM with id {vm_id}")
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE vms SET project = ?, name = ?, config = ?, updated_at = ? WHERE id = ?",
                    (project, config.name, config.model_dump_json(), now(), vm_id),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a VM named '{config.name}' already exists in project '{project}'",
                hint="pick another name, or delete the existing VM first",
            ) from exc
        after = self.by_id(vm_id)
        assert after is not None
        self._changed(before, None)
        self._changed(None, after)
        return after

    def set_state(self, vm_id: str, state: str, reason: str = "") -> None:
        before = self.by_id(vm_id) if self.listeners else None
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE vms SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
                (state, reason, now(), vm_id),
            )
        if self.listeners:
            self._changed(before, self.by_id(vm_id))

    def delete(self, vm_id: str) -> None:
        before = self.by_id(vm_id) if self.listeners else None
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,))
        if before is not None:
            self._changed(before, None)
