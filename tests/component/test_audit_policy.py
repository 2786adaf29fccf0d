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
from hangar.services.audit import HOST_SCOPE, PRUNE_EVERY, Retention
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
        world.as_token("alpha", "admin").post("/1.0/volumes", json={"name": "evt", "size": "1M"})
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
    assert kept == [f"a{i}" for i in range(7, 12)]


def test_one_projects_traffic_does_not_push_out_anothers_entries(world: World) -> None:
    audit = world.platform.audit
    audit.retention = Retention(max_rows=3, max_age_days=90)
    audit.prune()
    alpha_before = _log(world, "alpha")
    assert len(alpha_before) == 3
    refused = world.as_token("beta", "viewer")
    for n in range(120):  # past PRUNE_EVERY, so pruning runs on insert too
        answer = refused.post("/1.0/vms/web/start", params={"n": n})
        assert answer.status_code == 403
    assert len(_log(world, "beta")) < 3 + PRUNE_EVERY  # pruned on insert, every 100
    assert _log(world, "alpha") == alpha_before


def test_a_request_no_route_answers_is_recorded_as_its_caller(world: World) -> None:
    """No route authenticates a path none matches: the entry still says who it was, in
    its own scope, and only a request without a valid token is counted as noise."""
    noise = world.platform.audit.unauthenticated_total
    lost = world.as_token("alpha", "operator").post("/1.0/nosuch", params={"project": "beta"})
    assert lost.status_code == 404
    bad_query = world.as_token("alpha", "admin").post("/1.0/vms/web/stop?project=NOT%20OK")
    assert bad_query.status_code == 400
    assert world.api.post("/1.0/nothing-here").status_code == 404  # the local root
    assert world.platform.audit.unauthenticated_total == noise
    mine = [(e["actor_name"], e["status"], e["resource"]) for e in _log(world, "alpha")]
    assert ("alpha-operator", 404, "POST /1.0/nosuch") in mine
    assert ("alpha-admin", 400, "POST /1.0/vms/web/stop") in mine
    assert not [e for e in _log(world, "beta") if str(e["actor_name"]).startswith("alpha")]
    host = [(e["actor_name"], e["action"]) for e in _log(world, HOST_SCOPE)]
    assert ("local root", "POST (no route)") in host
    # Without a valid token it is noise, counted.
    stranger = world.api.post("/1.0/nosuch", headers={"Authorization": "Bearer wrong"})
    assert stranger.status_code == 401  # refused from its headers (api/guard.py)
    assert world.platform.audit.unauthenticated_total == noise + 1


def test_a_probe_reaches_the_probers_stream_not_the_probed_projects(world: World) -> None:
    with (
        world.api.websocket_connect(
            "/1.0/events?type=audit", headers=world.headers("beta", "admin")
        ) as beta,
        world.api.websocket_connect(
            "/1.0/events?type=audit", headers=world.headers("alpha", "admin")
        ) as alpha,
    ):
        for ws in (alpha, beta):
            assert json.loads(ws.receive_text())["type"] == "subscribed"
        probe = world.as_token("alpha", "operator").post(
            "/1.0/vms/web/stop", params={"project": "beta"}
        )
        assert probe.status_code == 404
        # beta's own change is the first audit event beta's admin sees: the probe is not.
        world.as_token("beta", "admin").post("/1.0/volumes", json={"name": "mine", "size": "1M"})
        first = json.loads(beta.receive_text())
        assert first["data"]["actor_name"] == "beta-admin", first
        seen = json.loads(alpha.receive_text())
        assert seen["project"] == "alpha" and seen["data"]["actor_name"] == "alpha-operator"
        assert seen["data"]["status"] == 404


def test_console_sessions_are_audited_in_the_callers_scope(world: World) -> None:
    api = world.api
    assert api.post("/1.0/vms/web/start", params={"project": "alpha"}).status_code in (200, 202)
    try:
        with api.websocket_connect(
            "/1.0/vms/web/console", headers=world.headers("alpha", "operator")
        ) as console:
            console.send_bytes(b"ping\n")
            assert console.receive_bytes().startswith(b"ping")
            # Recorded while the session is still open.
            opened = [e for e in _log(world, "alpha") if e["action"] == "console"]
            assert [(e["actor_name"], e["status"]) for e in opened] == [("alpha-operator", 101)]
            assert opened[0]["resource"] == "WEBSOCKET /1.0/vms/web/console"
        for role, project, code in (("viewer", "alpha", 4403), ("admin", "beta", 4404)):
            with api.websocket_connect(
                f"/1.0/vms/web/console?project={project}", headers=world.headers("alpha", role)
            ) as refused:
                assert refused.receive()["code"] == code
        rows = [(e["actor_name"], e["status"]) for e in _log(world, "alpha")]
        assert ("alpha-viewer", 403) in rows and ("alpha-admin", 404) in rows
        assert not [e for e in _log(world, "beta") if e["action"] == "console"]
        # The event stream only reads: not audited.
        with api.websocket_connect("/1.0/events", headers=world.headers("alpha", "viewer")) as ws:
            assert ws.receive_json()["type"] == "subscribed"
        assert not [e for e in _log(world, "alpha") if e["action"] == "events"]
        # Without a valid token it is noise, counted.
        noise = world.platform.audit.unauthenticated_total
        with api.websocket_connect(
            "/1.0/vms/web/console", headers={"Authorization": "Bearer wrong"}
        ) as stranger:
            assert stranger.receive()["code"] == 4401
        assert world.platform.audit.unauthenticated_total == noise + 1
    finally:
        api.post("/1.0/vms/web/stop", params={"project": "alpha", "force": "true"})
