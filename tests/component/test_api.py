"""The REST API in-process (FastAPI TestClient) over a Platform with a fake QEMU."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from tests.component.conftest import PlatformFactory
from tests.support.apps import BothListeners


@pytest.fixture
def api(make_platform: PlatformFactory) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(make_platform()))) as client:
        yield client


def test_openapi_describes_the_routes(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    for path in ("/1.0/vms", "/1.0/vms/{name}", "/1.0/vms/{name}/stop", "/1.0/images", "/1.0/host"):
        assert path in schema["paths"], path
    assert "VMCreate" in str(schema["components"]["schemas"])


def test_lifecycle_over_http(api: TestClient) -> None:
    created = api.post("/1.0/vms", json={"name": "web", "image": "tiny", "memory": "128M"})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "running" and created.json()["memory"] == 128 * 1024**2
    assert api.post("/1.0/vms/web/pause").json()["state"] == "paused"
    assert api.post("/1.0/vms/web/resume").json()["state"] == "running"
    stopped = api.post("/1.0/vms/web/stop", json={"timeout": 5})
    assert stopped.json()["method"] == "acpi"
    assert [v["name"] for v in api.get("/1.0/vms").json()] == ["web"]
    assert api.delete("/1.0/vms/web").status_code == 204
    assert api.get("/1.0/vms").json() == []


def test_errors_are_json_with_a_hint(api: TestClient) -> None:
    missing = api.get("/1.0/vms/ghost")
    assert missing.status_code == 404
    body = missing.json()
    assert body["error"] == "not-found" and "ghost" in body["message"] and body["hint"]

    api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False})
    conflict = api.post("/1.0/vms/web/pause")
    assert conflict.status_code == 409
    assert conflict.json()["details"] == {
        "vm": "web",
        "action": "pause",
        "state": "stopped",
        "allowed": ["running"],
    }
    assert conflict.json()["action"] is None  # nothing to suggest beyond the hint


def test_an_error_carries_its_next_step_beside_a_neutral_hint(api: TestClient) -> None:
    missing = api.get("/1.0/vms/ghost").json()
    assert missing["hint"] == "list the VMs to see which there are"
    assert missing["action"] == "list-vms" and missing["details"] == {"project": "default"}

    api.post("/1.0/vms", json={"name": "web", "image": "tiny", "memory": "128M"})
    # A refused operation's error carries it too (the client raises it from there).
    started = api.post("/1.0/vms/web/publish", json={"template": "tpl"})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 10
    op = started.json()
    while op["status"] == "running" and time.monotonic() < deadline:
        op = api.get(f"/1.0/operations/{op['id']}", params={"wait": 1}).json()
    assert op["status"] == "failure", op
    body = op["error"]
    assert body["hint"] == "stop the VM first" and "hangar" not in body["hint"]
    assert body["action"] == "stop-vm" and body["details"]["vm"] == "web"
    # The schema names the field, for clients generated from it.
    schema = api.get("/openapi.json").json()
    assert "action" in schema["components"]["schemas"]["ErrorBody"]["properties"]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"name": "web"}, "needs an image or an installer ISO"),
        ({"name": "web", "image": "tiny", "colour": "red"}, "colour: Extra inputs"),
        ({"name": "web", "image": "tiny", "memory": "lots"}, "is not a size"),
        ({"name": "web", "image": "tiny", "cpus": 0}, "cpus"),
    ],
)
def test_bad_requests_are_400_and_say_which_field(
    api: TestClient, body: dict[str, object], text: str
) -> None:
    response = api.post("/1.0/vms", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid-input" and text in response.json()["message"]
    assert api.get("/1.0/vms").json() == []


def test_console_of_a_stopped_vm_is_refused_with_a_reason(api: TestClient) -> None:
    api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False})
    with api.websocket_connect("/1.0/vms/web/console") as ws:
        message = ws.receive()
    assert message["type"] == "websocket.close"
    assert message["code"] == 4409 and "it is stopped" in message["reason"]


def test_console_echoes_through_the_fake_guest(api: TestClient) -> None:
    api.post("/1.0/vms", json={"name": "web", "image": "tiny"})
    with api.websocket_connect("/1.0/vms/web/console") as ws:
        ws.send_bytes(b"ping\n")
        assert ws.receive_bytes().startswith(b"ping")
