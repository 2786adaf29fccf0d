"""Schema migrations, in order. Never edit a released one: append a new one."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: VMs. ``config`` is the resolved VMConfig as JSON (it carries its own
    # format version); ``state`` is the last power state hangard recorded, used
    # when no QEMU runs (stopped or crashed) — a running QEMU is asked directly.
    [
        """CREATE TABLE vms (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            config TEXT NOT NULL,
            state TEXT NOT NULL,
            state_reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ],
]
MIGRATIONS.append(
    # 2: projects (tenants) with quotas, API tokens (hashes only), the audit log,
    # and VMs belonging to a project with names unique per project. SQLite cannot
    # drop a UNIQUE constraint, so the vms table is rebuilt.
    [
        """CREATE TABLE projects (
            name TEXT PRIMARY KEY,
            description TEXT NOT NULL DEFAULT '',
            max_instances INTEGER,
            max_cpus INTEGER,
            max_memory INTEGER,
            max_disk INTEGER,
            created_at TEXT NOT NULL
        )""",
        "INSERT INTO projects (name, description, created_at)"
        " VALUES ('default', 'the default project', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        """CREATE TABLE vms_v2 (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL REFERENCES projects(name),
            name TEXT NOT NULL,
            config TEXT NOT NULL,
            state TEXT NOT NULL,
            state_reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (project, name)
        )""",
        "INSERT INTO vms_v2 (id, project, name, config, state, state_reason, created_at,"
        " updated_at) SELECT id, 'default', name, config, state, state_reason, created_at,"
        " updated_at FROM vms",
        "DROP TABLE vms",
        "ALTER TABLE vms_v2 RENAME TO vms",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT
        )""",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            project TEXT NOT NULL,
            actor_id TEXT NOT NULL,
            actor_name TEXT NOT NULL,
            action TEXT NOT NULL,
            resource TEXT NOT NULL,
            result TEXT NOT NULL,
            status INTEGER NOT NULL,
            message TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX audit_project ON audit (project, seq)",
    ]
)
MIGRATIONS.append(
    # 3: storage pools (directories, host-wide) and volumes (one file each, in a
    # pool, belonging to a project; names unique per project).
    # ``vm_id`` is the VM a volume is attached to; deleting the VM detaches it
    # (volumes outlive VMs).
    [
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE volumes (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL REFERENCES projects(name),
            name TEXT NOT NULL,
            pool TEXT NOT NULL REFERENCES pools(name),
            format TEXT NOT NULL,
            size INTEGER NOT NULL,
            vm_id TEXT REFERENCES vms(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            UNIQUE (project, name)
        )""",
    ]
)
# 4: virtual networks. A network belongs to a project and its name is
# unique there; ``config`` is the resolved NetworkConfig as JSON. Forwards and firewall
# rules name their VM by id (VM names are unique only per project) and go with it, as
# forwards go with their network (the network service also removes them itself, as it
# re-renders the ruleset).
MIGRATIONS.append(
    # 4: virtual networks, each belonging to a project.
    [
        """CREATE TABLE networks (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL REFERENCES projects(name),
            name TEXT NOT NULL,
            config TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (project, name)
        )""",
        """CREATE TABLE forwards (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
            vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
            spec TEXT NOT NULL
        )""",
        "CREATE INDEX forwards_vm ON forwards (vm_id)",
        """CREATE TABLE firewall_rules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
            spec TEXT NOT NULL
        )""",
        "CREATE INDEX firewall_rules_vm ON firewall_rules (vm_id)",
    ]
)
MIGRATIONS.append(
    # 5: snapshots. A VM's snapshots form a tree (``parent``); each is one frozen qcow2
    # layer (``disk``), optionally a saved migration stream (``memory``) and the
    # VMConfig of the moment (``config``, JSON). ``snapshot_heads`` says which
    # snapshot a VM's running disk is built on (its next snapshot's parent).
    # Deleting a VM deletes its rows (its folder, which holds the files, goes too).
    [
        """CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            parent TEXT REFERENCES snapshots(id),
            disk TEXT NOT NULL,
            memory TEXT,
            config TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (vm_id, name)
        )""",
        """CREATE TABLE snapshot_heads (
            vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
            snapshot_id TEXT NOT NULL REFERENCES snapshots(id)
        )""",
    ]
)
MIGRATIONS.append(
    # 6: the host interfaces a project's networks may use as their uplink (a bridged
    # network's host bridge, a nat network's way out), as the host administrator
    # allows them. None listed: the project's admins may make nat and isolated
    # networks on hangar's own bridges only.
    [
        """CREATE TABLE project_uplinks (
            project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
            uplink TEXT NOT NULL,
            PRIMARY KEY (project, uplink)
        )""",
    ]
)
MIGRATIONS.append(
    # 7: the revisioned key-value store (state/sqlite_store.py), shaped after etcd's. One
    # row holds the store's revision (etcd's starts at 1) and the newest revision whose
    # changes are no longer kept; ``kv_history`` keeps the changes of the last revisions
    # for watchers that resume (value NULL: a delete).
    [
        """CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            create_revision INTEGER NOT NULL,
            mod_revision INTEGER NOT NULL
        )""",
        """CREATE TABLE kv_revision (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL,
            compacted INTEGER NOT NULL
        )""",
        "INSERT INTO kv_revision (id, revision, compacted) VALUES (1, 1, 1)",
        """CREATE TABLE kv_history (
            revision INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT,
            PRIMARY KEY (revision, key)
        )""",
    ]
)
