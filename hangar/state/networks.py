"""Repositories of networks, port forwards and firewall rules."""

from __future__ import annotations

import sqlite3

from hangar.errors import Conflict, NotFound
from hangar.spec.network import (
    FirewallRule,
    FirewallRuleCreate,
    Forward,
    ForwardCreate,
    NetworkConfig,
)
from hangar.state.db import Database
from hangar.state.vms import now


class NetworkRepository:
    def __init__(self, db: Database):
        self.db = db

    # --- networks -------------------------------------------------------------------

    def insert(self, config: NetworkConfig) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO networks (id, name, config, created_at) VALUES (?, ?, ?, ?)",
                    (config.id, config.name, config.model_dump_json(), now()),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a network named '{config.name}' already exists", hint="pick another name"
            ) from exc

    def set_config(self, config: NetworkConfig) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE networks SET config = ? WHERE id = ?", (config.model_dump_json(), config.id)
            )

    def all(self) -> list[NetworkConfig]:
        rows = self.db.query("SELECT config FROM networks ORDER BY name")
        return [NetworkConfig.model_validate_json(r["config"]) for r in rows]

    def find(self, name: str) -> NetworkConfig | None:
        rows = self.db.query("SELECT config FROM networks WHERE name = ?", (name,))
        return NetworkConfig.model_validate_json(rows[0]["config"]) if rows else None

    def get(self, name: str) -> NetworkConfig:
        found = self.find(name)
        if found is None:
            raise NotFound(
                f"no network named '{name}'", hint="'hangar network list' shows the networks"
            )
        return found

    def delete(self, network_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    # --- forwards -------------------------------------------------------------------

    def add_forward(self, network: NetworkConfig, spec: ForwardCreate, vm_ip: str) -> Forward:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO forwards (network_id, vm, spec) VALUES (?, ?, ?)",
                (network.id, spec.vm, spec.model_dump_json()),
            )
            fid = int(cur.lastrowid or 0)
        return Forward(id=fid, network=network.name, vm_ip=vm_ip, **spec.model_dump())

    def forwards(self) -> list[tuple[int, str, ForwardCreate]]:
        """(id, network id, spec) of every forward."""
        rows = self.db.query("SELECT id, network_id, spec FROM forwards ORDER BY id")
        return [
            (int(r["id"]), r["network_id"], ForwardCreate.model_validate_json(r["spec"]))
            for r in rows
        ]

    def delete_forward(self, forward_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwards WHERE id = ?", (forward_id,))

    # --- firewall rules -------------------------------------------------------------

    def add_rule(self, spec: FirewallRuleCreate) -> FirewallRule:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO firewall_rules (vm, spec) VALUES (?, ?)",
                (spec.vm, spec.model_dump_json()),
            )
            rid = int(cur.lastrowid or 0)
        return FirewallRule(id=rid, **spec.model_dump())

    def rules(self) -> list[FirewallRule]:
        rows = self.db.query("SELECT id, spec FROM firewall_rules ORDER BY id")
        return [
            FirewallRule(
                id=int(r["id"]), **FirewallRuleCreate.model_validate_json(r["spec"]).model_dump()
            )
            for r in rows
        ]

    def delete_rule(self, rule_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM firewall_rules WHERE id = ?", (rule_id,))

    def delete_for_vm(self, vm: str) -> None:
        """Forget a deleted VM's forwards and rules."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwards WHERE vm = ?", (vm,))
            conn.execute("DELETE FROM firewall_rules WHERE vm = ?", (vm,))
