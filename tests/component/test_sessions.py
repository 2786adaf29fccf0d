"""Revoking a token, or deleting a project, ends the websockets it opened at once:
consoles and event streams close with 4401 (revoked) or 4404 (project deleted)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from hangar.api.app import create_app
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners
from tests.support.fake_recipe import FakeRecipe

DEADLINE = 10.0


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    platform.images.recipes = {"tiny": FakeRecipe(step_seconds=0.05)}
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def closed_within(ws: WebSocketTestSession, seconds: float = DEADLINE) -> dict[str, Any]:
    """The close message, skipping data; fails if none comes within ``seconds``."""

    async def until_closed() -> dict[str, Any]:
        with anyio.fail_after(seconds):
            while True:
                message: dict[str, Any] = await ws._send_rx.receive()
                if message["type"] == "websocket.close":
                    return message

    result: dict[str, Any] = ws.portal.call(until_closed)
    return result


def test_revoking_a_token_closes_its_console_and_event_stream(world: World) -> None:
    api = world.api
    started = api.post("/1.0/vms/web/start", params={"project": "alpha"})
    assert started.status_code in (200, 202), started.text
    token = world.tokens[("alpha", "operator")]
    headers = world.headers("alpha", "operator")
    other = world.headers("alpha", "viewer")
    with (
        api.websocket_connect("/1.0/events", headers=headers) as events,
        api.websocket_connect("/1.0/events", headers=other) as unrelated,
        api.websocket_connect("/1.0/vms/web/console", headers=headers) as console,
    ):
        assert events.receive_json()["type"] == "subscribed"
        assert unrelated.receive_json()["type"] == "subscribed"
        console.send_bytes(b"ping\n")
        assert console.receive_bytes().startswith(b"ping")

        revoked = api.delete(f"/1.0/tokens/{token['id']}", params={"project": "alpha"})
        assert revoked.status_code == 204, revoked.text

        for ws in (events, console):
            message = closed_within(ws)
            assert (message["code"], message["reason"]) == (4401, "the token was revoked")
        # Another token's stream goes on: it still gets events.
        api.post("/1.0/vms/web/stop", params={"project": "alpha"})
        assert unrelated.receive_json()["type"] != "subscribed"
    # The console is free again for another operator.
    admin = world.headers("alpha", "admin")
    with api.websocket_connect("/1.0/vms/web/console", headers=admin) as console:
        console.send_bytes(b"x")
    api.post("/1.0/vms/web/stop", params={"project": "alpha", "force": "true"})


def test_deleting_a_project_closes_its_event_streams(world: World) -> None:
    api = world.api
    assert api.post("/1.0/projects", json={"name": "gamma"}).status_code == 201
    made = api.post("/1.0/tokens", params={"project": "gamma"}, json={"role": "viewer"})
    headers = {"Authorization": f"Bearer {made.json()['secret']}"}
    with (
        api.websocket_connect("/1.0/events", headers=headers) as by_token,
        api.websocket_connect("/1.0/events?project=gamma") as by_root,
        api.websocket_connect("/1.0/events") as everything,
    ):
        for ws in (by_token, by_root, everything):
            assert ws.receive_json()["type"] == "subscribed"
        assert api.delete("/1.0/projects/gamma").status_code == 204
        for ws in (by_token, by_root):
            message = closed_within(ws)
            assert (message["code"], message["reason"]) == (4404, "project 'gamma' was deleted")
        # The root's stream of every project goes on.
        api.post("/1.0/vms/web/start", params={"project": "alpha"})
        assert everything.receive_json()["type"] != "subscribed"


def test_revoking_a_token_ends_its_followed_log(world: World) -> None:
    api = world.api
    token = world.tokens[("alpha", "viewer")]
    headers = world.headers("alpha", "viewer")
    ended = threading.Event()

    def follow() -> None:
        with api.stream(
            "GET", "/1.0/vms/web/logs", params={"follow": "true"}, headers=headers
        ) as response:
            assert response.status_code == 200
            for _ in response.iter_bytes():
                pass
        ended.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    deadline = time.monotonic() + DEADLINE
    while not api.app.app.state.sessions._open:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the followed log did not open"
        time.sleep(0.02)
    assert api.delete(f"/1.0/tokens/{token['id']}", params={"project": "alpha"}).status_code == 204
    assert ended.wait(DEADLINE), "the followed log went on after its token was revoked"
