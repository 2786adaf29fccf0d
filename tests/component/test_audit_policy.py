"""The audit log's policy (issue 14, item 10): entries name the resource, land in the
caller's own scope, reach only those who may read them, are retained by a policy,
and unauthenticated noise is counted instead of stored row by row."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hangar.api.app import create_app
from hangar.services.audit import HOST_SCOPE, Retention
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def _log(world: World, project: str) -> list[dict[str, object]]:
    """The host administrator's view of one scope of the log (all of it, filtered)."""
    answer = world.api.get("/1.0/audit", params={"limit": 10000})
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json() if e["project"] == project]


def test_a_probe_of_another_project_lands_in_the_callers_log(world: World) -> None:
    before = len(_log(world, "beta"))
    probe = world.as_token("alpha", "operator").post(
        "/1.0/vms/web/stop", params={"project": "beta"}
    )
    assert probe.status_code == 404
    assert len(_log(world, "beta")) == before
    mine = [e for e in _log(world, "alpha") if e["action"] == "stop_vm"]
    assert mine and mine[-1]["status"] == 404 and mine[-1]["actor_name"] == "alpha-operator"


def test_an_entry_names_what_was_made(world: World) -> None:
    made = world.as_token("alpha", "operator").post(
        "/1.0/vms", json={"name": "named", "image": "tiny", "start": False}
    )
    assert made.status_code == 201, made.text
    entry = [e for e in _log(world, "alpha") if e["action"] == "create_vm"][-1]
    assert entry["resource"] == "POST /1.0/vms name=named"


def test_only_who_may_read_the_log_receives_audit_events(world: World) -> None:
    viewer = world.headers("alpha", "viewer")
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        world.api.websocket_connect("/1.0/events?type=audit", headers=viewer) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 4403
    admin = world.headers("alpha", "admin")
    with (
        world.api.websocket_connect("/1.0/events", headers=viewer) as as_viewer,
        world.api.websocket_connect("/1.0/events?type=audit", headers=admin) as as_admin,
    ):
        hello = json.loads(as_viewer.receive_text())
        assert hello["type"] == "subscribed" and "audit" not in hello["data"]["types"]
        assert json.loads(as_admin.receive_text())["type"] == "subscribed"
        world.as_token("alpha", "admin").post(
            "/1.0/volumes", json={"name": "evt", "size": "1M"}
        )
        event = json.loads(as_admin.receive_text())
        assert event["type"] == "audit" and event["data"]["resource"].endswith("name=evt")
        # The viewer's stream carries the next non-audit event, never the audit one.
        world.as_token("alpha", "operator").post("/1.0/vms/web/start")
        assert json.loads(as_viewer.receive_text())["type"] != "audit"


def test_unauthenticated_noise_is_counted_not_stored_row_by_row(world: World) -> None:
    before = len(_log(world, HOST_SCOPE))
    for _ in range(50):
        answer = world.api.post(
            "/1.0/vms", json={"name": "x"}, headers={"Authorization": "Bearer wrong"}
        )
        assert answer.status_code == 401
    assert world.platform.audit.unauthenticated_total >= 50
    rows = _log(world, HOST_SCOPE)[before:]
    assert len(rows) == 1, rows
    assert rows[0]["resource"] == "50 request(s) from 1 source(s)"


def test_the_retention_policy_prunes_old_entries(world: World) -> None:
    audit = world.platform.audit
    audit.retention = Retention(max_rows=5, max_age_days=90)
    for i in range(12):
        audit.record(
            project="alpha", actor_id="t", actor_name="t", action=f"a{i}", resource="r", status=200
        )
    audit.prune()
    kept = [e["action"] for e in _log(world, "alpha")]
    assert len(audit.repo.list(None, 1000)) == 5
    assert kept[-1] == "a11"
