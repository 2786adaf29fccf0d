from pathlib import Path

import pytest

from hangar.errors import Conflict, NotFound
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMCreate
from hangar.state.db import Database
from hangar.state.migrations import MIGRATIONS
from hangar.state.vms import VMRecord, VMRepository
from tests.support.factories import host_facts, tiny_manifest


def _config(name: str, vm_id: str):  # type: ignore[no-untyped-def]
    return resolve(
        VMCreate(name=name, image="tiny"),
        tiny_manifest(),
        host_facts(),
        vm_id=vm_id,
        kernel_path="/k",
        initrd_path=None,
    )


def test_migrations_apply_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.db")
    assert db.schema_version == len(MIGRATIONS)
    db.close()
    again = Database(tmp_path / "h.db")  # re-opening applies nothing twice
    assert again.schema_version == len(MIGRATIONS)
    assert again.query("PRAGMA journal_mode")[0][0] == "wal"


def test_vm_rows(tmp_path: Path) -> None:
    repo = VMRepository(Database(tmp_path / "h.db"))
    config = _config("web", "a" * 32)
    repo.insert(config, "stopped")
    assert repo.get("web").config == config
    with pytest.raises(Conflict, match="already exists"):
        repo.insert(_config("web", "b" * 32), "stopped")
    repo.set_state(config.id, "crashed", "QEMU was killed")
    got = repo.get("web")
    assert (got.state, got.state_reason) == ("crashed", "QEMU was killed")
    repo.insert(_config("app", "c" * 32), "stopped")
    assert [r.name for r in repo.list()] == ["app", "web"]
    repo.delete(config.id)
    with pytest.raises(NotFound, match="no VM named 'web' in project 'default'"):
        repo.get("web")
    assert repo.find("web") is None


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.db")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO vms VALUES ('x','default','x','{}','stopped','','t','t')")
        raise RuntimeError("boom")
    assert db.query("SELECT COUNT(*) FROM vms")[0][0] == 0


def test_moving_a_vm_renames_it_into_another_project_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.db")
    db.query("SELECT 1")
    with db.transaction() as conn:
        conn.execute("INSERT INTO projects (name, description, created_at) VALUES ('_s', '', 't')")
    repo = VMRepository(db)
    seen: list[tuple[str | None, str | None]] = []

    def where(record: VMRecord | None) -> str | None:
        return f"{record.project}/{record.name}" if record else None

    repo.listeners.append(lambda before, after: seen.append((where(before), where(after))))
    standby = _config("standby-1", "a" * 32)
    repo.insert(standby, "running", "_s")
    repo.insert(_config("taken", "b" * 32), "stopped")
    seen.clear()
    with pytest.raises(Conflict, match="'taken' already exists in project 'default'"):
        repo.move(standby.id, "default", standby.model_copy(update={"name": "taken"}))
    assert repo.get("standby-1", "_s").config == standby and seen == []
    moved = repo.move(standby.id, "default", standby.model_copy(update={"name": "web"}))
    assert (moved.project, moved.name, moved.state) == ("default", "web", "running")
    assert repo.get("web").id == standby.id and repo.find("standby-1", "_s") is None
    # Listeners (the event stream) see it leave one project and arrive in the other.
    assert seen == [("_s/standby-1", None), (None, "default/web")]
