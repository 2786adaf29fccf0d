"""Pure pieces of the platform: remotes store, quota parsing, event filters,
operations bookkeeping, token hashing."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import BaseModel

from hangar.api.tls import generate
from hangar.certs import fingerprint
from hangar.cli.projects import parse_quotas
from hangar.client.remotes import LOCAL, Remote, RemoteStore, config_dir, parse_url
from hangar.errors import CertificateChanged, Conflict, InvalidInput, NotFound
from hangar.services.events import EventBus
from hangar.services.operations import Operation, OperationManager
from hangar.state.db import Database
from hangar.state.projects import ProjectRepository
from hangar.state.tokens import TokenRepository, hash_secret


def test_config_dir_follows_xdg() -> None:
    assert config_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/hangar")
    assert config_dir({"HOME": "/home/u"}) == Path("/home/u/.config/hangar")


def _remote(tmp_path: Path, name: str = "far") -> Remote:
    generate(tmp_path / "c.crt", tmp_path / "c.key", ["127.0.0.1"])
    pem = (tmp_path / "c.crt").read_text()
    return Remote(name, "https://127.0.0.1:8443", "hgr_x", pem, fingerprint(pem))


def test_remote_store_add_switch_remove(tmp_path: Path) -> None:
    store = RemoteStore(tmp_path / "cfg")
    assert store.current() == LOCAL and store.list() == []
    remote = _remote(tmp_path)
    store.add(remote)
    assert (tmp_path / "cfg" / "remotes.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict):
        store.add(remote)
    with pytest.raises(Conflict):
        store.add(Remote(LOCAL, remote.url, "t", remote.certificate, remote.fingerprint))
    store.switch("far")
    assert store.current() == "far" and store.get("far") == remote
    with pytest.raises(NotFound, match="remotes: local, far"):
        store.switch("near")
    store.remove("far")
    assert store.current() == LOCAL and store.list() == []


def test_pinned_certificate_check(tmp_path: Path) -> None:
    remote = _remote(tmp_path)
    remote.check_peer(ssl.PEM_cert_to_DER_cert(remote.certificate))
    generate(tmp_path / "d.crt", tmp_path / "d.key", ["127.0.0.1"])
    other = ssl.PEM_cert_to_DER_cert((tmp_path / "d.crt").read_text())
    with pytest.raises(CertificateChanged, match="has changed"):
        remote.check_peer(other)
    assert (tmp_path / "d.key").stat().st_mode & 0o777 == 0o600


def test_remote_urls_must_be_https() -> None:
    assert parse_url("https://h:9443") == ("h", 9443)
    with pytest.raises(InvalidInput):
        parse_url("http://h:9443")


def test_quota_settings_parse() -> None:
    assert parse_quotas(("max-instances=2", "max-memory=1G", "max-disk=none")) == {
        "max_instances": 2,
        "max_memory": 1024**3,
        "max_disk": None,
    }
    for bad in ("max-ram=1G", "max-cpus=two", "max-cpus"):
        with pytest.raises(InvalidInput):
            parse_quotas((bad,))


def test_tokens_are_found_by_hash_only(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.db")
    ProjectRepository(db).insert("p")
    repo = TokenRepository(db)
    repo.insert("id1", "p", "ci", "viewer", "hgr_secret")
    assert repo.authenticate("hgr_secret") is not None
    assert repo.authenticate("hgr_secreT") is None
    assert db.query("SELECT secret_hash FROM tokens")[0][0] == hash_secret("hgr_secret")


async def test_event_filters_by_project_and_type() -> None:
    bus = EventBus()
    sub = bus.subscribe(["a"], ["lifecycle"])
    bus.publish("lifecycle", "b", {"n": 1})
    bus.publish("audit", "a", {"n": 2})
    bus.publish("lifecycle", "a", {"n": 3})
    assert (await sub.get()).data == {"n": 3} and sub.queue.empty()
    sub.close()
    bus.publish("lifecycle", "a", {"n": 4})
    assert sub.queue.empty()


class Done(BaseModel):
    value: int


async def test_operations_finish_fail_and_cancel() -> None:
    manager = OperationManager(EventBus())

    async def ok(op: Operation) -> Done:
        op.progress("half", percent=50)
        return Done(value=1)

    async def endless(op: Operation) -> Done:
        while True:
            op.checkpoint()
            await asyncio.sleep(0.01)

    async def broken(op: Operation) -> Done:
        raise Conflict("nope", hint="h")

    good = manager.start("p", "t", "ok", ok)
    bad = manager.start("p", "t", "bad", broken)
    long = manager.start("q", "t", "long", endless)
    await asyncio.wait_for(good.done.wait(), 2)
    await asyncio.wait_for(bad.done.wait(), 2)
    assert good.view.status == "success" and good.view.result == {"value": 1}
    assert bad.view.status == "failure" and bad.view.error and bad.view.error["error"] == "conflict"
    with pytest.raises(NotFound):
        manager.get(long.id, "p")  # another project's operation does not exist for you
    manager.cancel(long.id, "q")
    await asyncio.wait_for(long.done.wait(), 2)
    assert long.view.status == "cancelled"
    with pytest.raises(Conflict, match="already finished"):
        manager.cancel(long.id)
    assert {o.id for o in manager.list("p")} == {good.id, bad.id}


def test_a_version_1_database_moves_its_vms_into_the_default_project(tmp_path: Path) -> None:
    import sqlite3

    from hangar.state.migrations import MIGRATIONS
    from hangar.state.vms import VMRepository
    from tests.unit.test_state import _config

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    config = _config("web", "a" * 32)
    conn.execute(
        "INSERT INTO vms VALUES (?, ?, ?, 'stopped', '', 't', 't')",
        (config.id, "web", config.model_dump_json()),
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    db = Database(path)
    assert db.schema_version == len(MIGRATIONS)
    record = VMRepository(db).get("web")
    assert record.project == "default" and record.config == config
    assert [p.name for p in ProjectRepository(db).list()] == ["default"]


def test_rebuilding_the_vms_table_keeps_rows_that_reference_it(tmp_path: Path) -> None:
    """A table with ON DELETE SET NULL to vms (as volumes have) keeps its links."""
    import sqlite3

    from hangar.state.migrations import MIGRATIONS
    from tests.unit.test_state import _config

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(
        "CREATE TABLE attached (id TEXT, vm_id TEXT REFERENCES vms(id) ON DELETE SET NULL)"
    )
    config = _config("web", "a" * 32)
    conn.execute(
        "INSERT INTO vms VALUES (?, ?, ?, 'stopped', '', 't', 't')",
        (config.id, "web", config.model_dump_json()),
    )
    conn.execute("INSERT INTO attached VALUES ('disk', ?)", (config.id,))
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    db = Database(path)
    assert db.query("SELECT vm_id FROM attached")[0][0] == config.id
    assert db.query("PRAGMA foreign_keys")[0][0] == 1


def test_cli_errors_print_user_text_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """Fingerprints hold ':AB:' and ':CD:' (Rich emoji codes) and names may hold '[x]'."""
    from hangar.cli.app import _fail

    message = "pinned 80:E6:AB:8E:D6:0F:CD:25, VM 'web[1]'"
    with pytest.raises(SystemExit) as exited:
        _fail(message, "run 'hangar remote remove [far]'", 8)
    assert exited.value.code == 8
    printed = capsys.readouterr().err
    assert message in printed and "hangar remote remove [far]" in printed
