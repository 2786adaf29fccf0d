"""Repositories of networks, port forwards and firewall rules.

A network belongs to a project (names are unique per project). Forwards and
firewall rules point at their VM by id, so two projects' VMs of the same name
never share them, and the database drops them with the VM (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hangar.errors import Conflict, NextStep, NotFound
from hangar.spec.network import (
    FirewallRule,
    FirewallRuleCreate,
    ForwardCreate,
    NetworkConfig,
)
from hangar.state.db import Database
from hangar.state.vms import DEFAULT_PROJECT, now


@dataclass(frozen=True)
class ForwardRow:
    id: int
    network_id: str
    vm_id: str
    spec: ForwardCreate


def _not_found(name: str, project: str) -> NotFound:
    return NotFound(
        f"no network named '{name}' in project '{project}'",
        hint="list the networks to see which there are",
        action=NextStep.LIST_NETWORKS,
    )


class NetworkRepository:
    def __init__(self, db: Database):
        self.db = db

    # --- networks -------------------------------------------------------------------

    def insert(self, config: NetworkConfig) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO networks (id, project, name, config, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (config.id, config.project, config.name, config.model_dump_json(), now()),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a network named '{config.name}' already exists in project '{config.project}'",
                hint="pick another name",
            ) from exc

    def set_config(self, config: NetworkConfig) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE networks SET config = ? WHERE id = ?", (config.model_dump_json(), config.id)
            )

    def all(self) -> list[NetworkConfig]:
        """Every project's networks (the host's bridges, subnets and ruleset are shared)."""
        rows = self.db.query("SELECT config FROM networks ORDER BY project, name")
        return [NetworkConfig.model_validate_json(r["config"]) for r in rows]

    def in_project(self, project: str) -> list[NetworkConfig]:
        rows = self.db.query(
            "SELECT config FROM networks WHERE project = ? ORDER BY name", (project,)
        )
        return [NetworkConfig.model_validate_json(r["config"]) for r in rows]

    def count(self, project: str) -> int:
        rows = self.db.query("SELECT COUNT(*) FROM networks WHERE project = ?", (project,))
        return int(rows[0][0])

    def find(self, name: str, project: str = DEFAULT_PROJECT) -> NetworkConfig | None:
        rows = self.db.query(
            "SELECT config FROM networks WHERE project = ? AND name = ?", (project, name)
        )
        return NetworkConfig.model_validate_json(rows[0]["config"]) if rows else None

    def get(self, name: str, project: str = DEFAULT_PROJECT) -> NetworkConfig:
        found = self.find(name, project)
        if found is None:
            raise _not_found(name, project)
        return found

    def delete(self, network_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    # --- forwards -------------------------------------------------------------------

    def add_forward(self, network: NetworkConfig, vm_id: str, spec: ForwardCreate) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO forwards (network_id, vm_id, spec) VALUES (?, ?, ?)",
                (network.id, vm_id, spec.model_dump_json()),
            )
            return int(cur.lastrowid or 0)

    def forwards(self) -> list[ForwardRow]:
        """Every forward of every project."""
        rows = self.db.query("SELECT id, network_id, vm_id, spec FROM forwards ORDER BY id")
        return [
            ForwardRow(
                int(r["id"]),
                r["network_id"],
                r["vm_id"],
                ForwardCreate.model_validate_json(r["spec"]),
            )
            for r in rows
        ]

    def delete_forward(self, forward_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwards WHERE id = ?", (forward_id,))

    # --- firewall rules -------------------------------------------------------------

    def add_rule(self, vm_id: str, spec: FirewallRuleCreate) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO firewall_rules (vm_id, spec) VALUES (?, ?)",
                (vm_id, spec.model_dump_json()),
            )
            return int(cur.lastrowid or 0)

    def rules(self, project: str | None = None) -> list[FirewallRule]:
        """The rules of ``project``'s VMs, or of every project's when it is None."""
        sql = (
            "SELECT r.id, r.vm_id, r.spec, v.project, v.name FROM firewall_rules r"
            " JOIN vms v ON v.id = r.vm_id"
        )
        params: tuple[object, ...] = ()
        if project is not None:
            sql += " WHERE v.project = ?"
            params = (project,)
        rows = self.db.query(sql + " ORDER BY r.id", params)
        result = []
        for r in rows:
            spec = FirewallRuleCreate.model_validate_json(r["spec"])
            fields = {**spec.model_dump(), "vm": r["name"]}
            result.append(
                FirewallRule(id=int(r["id"]), project=r["project"], vm_id=r["vm_id"], **fields)
            )
        return result

    def delete_rule(self, rule_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM firewall_rules WHERE id = ?", (rule_id,))

    def delete_for_vm(self, vm_id: str) -> None:
        """Forget a deleted VM's forwards and rules (the VM row's delete would, too)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwards WHERE vm_id = ?", (vm_id,))
            conn.execute("DELETE FROM firewall_rules WHERE vm_id = ?", (vm_id,))
