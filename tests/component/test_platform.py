"""Projects, quotas, operations, events and the audit log through the in-process API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.services.platform import Platform
from tests.component.conftest import PlatformFactory
from tests.support.apps import BothListeners
from tests.support.fake_recipe import FakeRecipe

MiB = 1024**2


@pytest.fixture
def platform(make_platform: PlatformFactory) -> Platform:
    platform = make_platform()
    platform.images.recipes = {"tiny": FakeRecipe(step_seconds=0.2)}
    return platform


@pytest.fixture
def api(platform: Platform) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(platform))) as client:
        yield client


def launch(api: TestClient, name: str, project: str = "quota", **spec: Any) -> Any:
    body = {"name": name, "image": "tiny", "start": False, "memory": "128M", **spec}
    return api.post("/1.0/vms", params={"project": project}, json=body)


def leftovers(platform: Platform) -> list[str]:
    return sorted(p.name for p in platform.paths.vms.iterdir())


@pytest.mark.parametrize(
    ("quota", "fits", "limit_text"),
    [
        ({"max_instances": 2}, 2, "instances quota: limit 2, in use 2"),
        ({"max_memory": 256 * MiB}, 2, "memory quota: limit 256M, in use 256M"),
        ({"max_cpus": 3}, 3, "vCPUs quota: limit 3, in use 3"),
        ({"max_disk": 2 * 1024 * MiB}, 2, "disk quota: limit 2G, in use 2G"),
    ],
)
def test_quota_boundaries_exactly_at_the_limit_then_one_over(
    api: TestClient, platform: Platform, quota: dict[str, int], fits: int, limit_text: str
) -> None:
    assert api.post("/1.0/projects", json={"name": "quota", "quotas": quota}).status_code == 201
    for i in range(fits):
        made = launch(api, f"vm{i}", cpus=1, disk="1G")
        assert made.status_code == 201, made.text
    before = leftovers(platform)
    over = launch(api, "one-over", cpus=1, disk="1G")
    assert over.status_code == 422
    body = over.json()
    assert body["error"] == "quota-exceeded" and limit_text in body["message"], body
    assert body["details"]["in_use"] + body["details"]["requested"] > body["details"]["value"]
    # nothing was created: no row, no folder
    assert "one-over" not in [v["name"] for v in api.get("/1.0/vms?project=quota").json()]
    assert leftovers(platform) == before
    # the same VM fits in another project, and again here once the limit is raised
    assert launch(api, "one-over", project="default", cpus=1, disk="1G").status_code == 201
    key = next(iter(quota))
    assert api.patch("/1.0/projects/quota", json={key: None}).status_code == 200
    assert launch(api, "one-over", cpus=1, disk="1G").status_code == 201


def test_project_usage_and_deletion_rules(api: TestClient) -> None:
    assert api.post("/1.0/projects", json={"name": "quota"}).status_code == 201
    assert api.post("/1.0/projects", json={"name": "quota"}).status_code == 409
    assert api.post("/1.0/projects", json={"name": "Bad Name"}).status_code == 400
    launch(api, "web")
    shown = api.get("/1.0/projects/quota").json()
    assert shown["usage"] == {
        "instances": 1,
        "cpus": 1,
        "memory": 128 * MiB,
        "disk": shown["usage"]["disk"],
    }
    refused = api.delete("/1.0/projects/quota")
    assert refused.status_code == 409 and "still has 1 VM" in refused.json()["message"]
    assert api.delete("/1.0/projects/default").status_code == 409
    assert api.delete("/1.0/vms/web?project=quota").status_code == 204
    assert api.delete("/1.0/projects/quota").status_code == 204
    assert api.get("/1.0/projects/quota").status_code == 404


def test_vm_names_are_unique_per_project(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "quota"})
    assert launch(api, "web").status_code == 201
    assert launch(api, "web", project="default").status_code == 201
    again = launch(api, "web")
    assert again.status_code == 409 and "in project 'quota'" in again.json()["message"]
    assert api.get("/1.0/vms/web?project=quota").json()["project"] == "quota"
    assert api.get("/1.0/vms/web").json()["project"] == "default"
    everything = api.get("/1.0/vms", params={"all_projects": True}).json()
    assert sorted((v["project"], v["name"]) for v in everything) == [
        ("default", "web"),
        ("quota", "web"),
    ]
    token = api.post("/1.0/tokens?project=quota", json={"role": "viewer"}).json()["secret"]
    mine = api.get(
        "/1.0/vms", params={"all_projects": True}, headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert [(v["project"], v["name"]) for v in mine] == [("quota", "web")]


def _wait_op(api: TestClient, op_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        op = api.get(f"/1.0/operations/{op_id}", params={"wait": 1}).json()
        if op["status"] != "running":
            return dict(op)
    raise AssertionError(f"operation {op_id} did not finish")


def test_image_build_is_an_operation_with_progress(api: TestClient, platform: Platform) -> None:
    started = api.post("/1.0/images", json={"name": "tiny", "force": True})
    assert started.status_code == 202
    op = _wait_op(api, started.json()["id"])
    assert op["status"] == "success" and op["progress_percent"] == 100.0
    assert op["result"]["built"] and op["result"]["image"]["recipe_hash"] == "fake"
    assert api.get("/1.0/images/tiny").json()["recipe_hash"] == "fake"
    assert [o["id"] for o in api.get("/1.0/operations").json()] == [op["id"]]
    assert api.delete(f"/1.0/operations/{op['id']}").status_code == 409  # already finished


def test_a_cancelled_build_leaves_nothing_behind(api: TestClient, platform: Platform) -> None:
    image_dir = platform.paths.images
    before = sorted(p.name for p in image_dir.rglob("*"))
    op = api.post("/1.0/images", json={"name": "tiny", "force": True}).json()
    deadline = time.monotonic() + 5
    while not list(image_dir.glob(".build-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(image_dir.glob(".build-*")), "the build never started"
    cancelled = api.delete(f"/1.0/operations/{op['id']}")
    assert cancelled.status_code == 202
    final = _wait_op(api, op["id"])
    assert final["status"] == "cancelled" and final["error"]["error"] == "cancelled"
    assert sorted(p.name for p in image_dir.rglob("*")) == before  # no temp folder, no files
    assert api.get("/1.0/images/tiny").json()["recipe_hash"] != "fake"


def test_a_failed_build_is_kept_with_its_error(api: TestClient, platform: Platform) -> None:
    missing = api.post("/1.0/images", json={"name": "nope"})
    assert missing.status_code == 404 and "hangar can build: tiny" in missing.json()["hint"]


def _events(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.receive_text()) for _ in range(count)]


def test_an_event_for_every_lifecycle_change(api: TestClient) -> None:
    with api.websocket_connect("/1.0/events?type=lifecycle&project=default") as ws:
        assert json.loads(ws.receive_text())["type"] == "subscribed"
        assert api.post("/1.0/vms", json={"name": "web", "image": "tiny"}).status_code == 201
        assert api.post("/1.0/vms/web/pause").status_code == 200
        assert api.post("/1.0/vms/web/resume").status_code == 200
        assert api.post("/1.0/vms/web/stop", json={"timeout": 5}).status_code == 200
        assert api.delete("/1.0/vms/web").status_code == 204
        seen = [(e["data"]["change"], e["data"]["state"]) for e in _events(ws, 7)]
    assert seen == [
        ("created", "stopped"),
        ("state", "starting"),
        ("state", "running"),
        ("state", "paused"),
        ("state", "running"),
        ("state", "stopped"),  # the supervisor's exit handler, after the ACPI shutdown
        ("deleted", "deleted"),
    ]


def test_audit_records_who_did_what_with_which_result(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "quota"})
    token = api.post("/1.0/tokens?project=quota", json={"role": "viewer", "name": "ci"}).json()
    headers = {"Authorization": f"Bearer {token['secret']}"}
    assert (
        api.post(
            "/1.0/vms?project=quota", json={"name": "x", "image": "tiny"}, headers=headers
        ).status_code
        == 403
    )
    launch(api, "web")
    entries = api.get("/1.0/audit", params={"project": "quota"}).json()
    rows = [(e["actor_name"], e["action"], e["result"], e["status"]) for e in entries]
    assert ("local root", "create_token", "success", 201) in rows
    assert ("ci", "create_vm", "error", 403) in rows
    assert ("local root", "create_vm", "success", 201) in rows
    denied = next(e for e in entries if e["actor_name"] == "ci")
    assert denied["actor_id"] == token["id"] and denied["resource"] == "POST /1.0/vms name=x"
    assert api.get("/1.0/audit", headers=headers).status_code == 403  # viewers do not read it
