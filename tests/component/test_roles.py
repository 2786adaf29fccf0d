"""The role matrix: every endpoint x every role x own and foreign project.

Allowed means the request got past authorization (any answer but 401/403/404, e.g.
a 409 for pausing a stopped VM still proves the role may pause). Denied in the own
project is 403; anything in a foreign project is 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from unittest.mock import MagicMock

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hangar.api.app import create_app
from hangar.services.operations import Operation
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import TCP_HEADER, BothListeners
from tests.support.fake_recipe import FakeRecipe

READ, OPERATE, ADMIN, HOST = 1, 2, 3, 4
ROLE_LEVEL = {"viewer": READ, "operator": OPERATE, "admin": ADMIN}

# (method, path, JSON body, level). {p}: the project in the path; {op}, {tok}, {fwd},
# {rule}: ids of an operation, a spare token, a port forward and a firewall rule in the
# project. Other routes get the project as ?project=.
ENDPOINTS: list[tuple[str, str, Any, int]] = [
    ("GET", "/1.0/host", None, READ),
    ("GET", "/1.0/whoami", None, READ),
    ("GET", "/1.0/images", None, READ),
    ("GET", "/1.0/images/tiny", None, READ),
    ("POST", "/1.0/images", {"name": "tiny"}, HOST),
    ("GET", "/1.0/vms", None, READ),
    ("POST", "/1.0/vms", {"name": "new", "image": "tiny", "start": False}, OPERATE),
    (
        "POST",
        "/1.0/vms/batch",
        {"name": "new", "image": "tiny", "count": 2, "start": False},
        OPERATE,
    ),
    ("GET", "/1.0/vms/web", None, READ),
    ("GET", "/1.0/vms/web/logs", None, READ),
    ("POST", "/1.0/vms/web/start", None, OPERATE),
    ("POST", "/1.0/vms/web/stop", None, OPERATE),
    ("POST", "/1.0/vms/web/restart", None, OPERATE),
    ("POST", "/1.0/vms/web/pause", None, OPERATE),
    ("POST", "/1.0/vms/web/resume", None, OPERATE),
    ("DELETE", "/1.0/vms/web", None, OPERATE),
    ("WS", "/1.0/vms/web/console", None, OPERATE),
    ("WS", "/1.0/events", None, READ),
    ("GET", "/1.0/operations", None, READ),
    ("GET", "/1.0/operations/{op}", None, READ),
    ("DELETE", "/1.0/operations/{op}", None, OPERATE),
    ("GET", "/1.0/projects", None, READ),
    ("POST", "/1.0/projects", {"name": "gamma"}, HOST),
    ("GET", "/1.0/projects/{p}", None, READ),
    ("PATCH", "/1.0/projects/{p}", {"max_instances": 9}, HOST),  # quotas: host admin
    ("GET", "/1.0/projects/{p}/uplinks", None, READ),
    ("PUT", "/1.0/projects/{p}/uplinks", {"uplinks": []}, HOST),
    ("DELETE", "/1.0/projects/{p}", None, HOST),
    ("GET", "/1.0/tokens", None, ADMIN),
    ("POST", "/1.0/tokens", {"role": "viewer"}, ADMIN),
    ("DELETE", "/1.0/tokens/{tok}", None, ADMIN),
    ("GET", "/1.0/audit", None, ADMIN),
    # storage: images and pools are host-wide; copies and volumes stay in the project
    ("POST", "/1.0/images/import", {"path": "/nonexistent/disk.qcow2"}, HOST),
    ("DELETE", "/1.0/images/tiny", None, HOST),  # 409 locally: 'web' uses it
    ("PATCH", "/1.0/images/tiny", {"project": None}, HOST),
    ("GET", "/1.0/images/tiny/standby", None, HOST),
    ("PUT", "/1.0/images/tiny/standby", {"count": 0}, HOST),  # 400 locally: tiny is not warm
    ("POST", "/1.0/exports", {"source": "web", "format": "qcow2", "path": "/nonexistent/x"}, HOST),
    ("POST", "/1.0/vms/web/copy", {"name": "web-copy"}, OPERATE),
    ("POST", "/1.0/vms/web/publish", {"template": "tpl"}, HOST),
    ("POST", "/1.0/vms/web/fork", {"count": 1}, OPERATE),
    ("POST", "/1.0/vms/web/resize", {"size": "2G"}, OPERATE),
    ("GET", "/1.0/storage/pools", None, READ),
    ("POST", "/1.0/storage/pools", {"name": "p2", "path": "relative"}, HOST),  # 400 locally
    ("DELETE", "/1.0/storage/pools/default", None, HOST),  # 409 locally
    ("GET", "/1.0/volumes", None, READ),
    ("POST", "/1.0/volumes", {"name": "vol2", "size": "1M"}, OPERATE),
    ("GET", "/1.0/volumes/data", None, READ),
    ("POST", "/1.0/volumes/data/resize", {"size": "2M"}, OPERATE),
    ("POST", "/1.0/volumes/data/attach", {"vm": "web"}, OPERATE),
    ("POST", "/1.0/volumes/data/detach", {"vm": "web"}, OPERATE),  # 409: not attached
    ("DELETE", "/1.0/volumes/data", None, OPERATE),
    ("GET", "/1.0/networks", None, READ),
    ("POST", "/1.0/networks", {"name": "new", "type": "isolated"}, ADMIN),
    ("GET", "/1.0/networks/lan", None, READ),
    ("DELETE", "/1.0/networks/lan", None, ADMIN),  # 409: web is on it
    ("POST", "/1.0/networks/lan/peers", {"network": "lan"}, ADMIN),  # 400: itself
    ("DELETE", "/1.0/networks/lan/peers/lan", None, ADMIN),
    ("POST", "/1.0/vms/web/nics", {"network": "lan"}, OPERATE),  # 400: already on it
    ("DELETE", "/1.0/vms/web/nics/lan", None, OPERATE),
    ("GET", "/1.0/forwards", None, READ),
    (
        "POST",
        "/1.0/networks/lan/forwards",
        {"host_port": 8080, "vm": "web", "vm_port": 80},
        OPERATE,
    ),
    ("DELETE", "/1.0/forwards/{fwd}", None, OPERATE),
    ("GET", "/1.0/firewall", None, READ),
    ("POST", "/1.0/firewall", {"vm": "web", "direction": "in", "action": "deny"}, OPERATE),
    ("DELETE", "/1.0/firewall/{rule}", None, OPERATE),
    # snapshots belong to the VM's project
    ("GET", "/1.0/vms/web/snapshots", None, READ),
    ("POST", "/1.0/vms/web/snapshots", {"name": "snap2"}, OPERATE),
    ("GET", "/1.0/vms/web/snapshots/snap", None, READ),
    ("POST", "/1.0/vms/web/snapshots/snap/restore", {"force": True}, OPERATE),
    ("DELETE", "/1.0/vms/web/snapshots/snap", None, OPERATE),
    # guests: the fake 'web' has no agent or display, so allowed calls answer 409
    ("POST", "/1.0/vms/web/exec", {"command": ["true"]}, OPERATE),
    ("GET", "/1.0/vms/web/guest", None, READ),
    ("GET", "/1.0/vms/web/screenshot", None, OPERATE),
    ("POST", "/1.0/vms/web/iso/detach", None, OPERATE),
    ("WS", "/1.0/vms/web/vnc", None, OPERATE),
]


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    platform.images.recipes = {"tiny": FakeRecipe(step_seconds=0.05)}
    with TestClient(BothListeners(create_app(platform))) as api:
        world = populate(api, platform)
        yield world


def _endless_operation(world: World, project: str) -> str:
    async def work(op: Operation) -> Any:
        while True:
            op.checkpoint()
            await asyncio.sleep(0.02)

    async def start() -> str:
        return world.platform.operations.start(project, "test", "endless", work).id

    return str(world.api.portal.call(start))  # type: ignore[union-attr]


def _call(
    world: World, headers: dict[str, str], method: str, path: str, body: Any, project: str | None
) -> int:
    params = {"project": project} if project else {}
    if method == "WS":
        query = f"?project={project}" if project else ""
        try:
            with world.api.websocket_connect(path + query, headers=headers) as ws:
                ws.send_text("")  # events: nothing; console: bytes to the guest
                message = ws.receive()
        except WebSocketDisconnect as exc:
            return exc.code - 4000
        if message["type"] == "websocket.close":
            return int(message["code"]) - 4000 if message["code"] >= 4000 else 200
        return 200
    response = world.api.request(method, path, headers=headers, params=params, json=body)
    return response.status_code


def _expand(world: World, path: str, project: str) -> str:
    if "{op}" in path:
        path = path.replace("{op}", _endless_operation(world, project))
    if "{tok}" in path:
        spare = world.api.post(
            "/1.0/tokens", params={"project": project}, json={"role": "viewer", "name": "spare"}
        ).json()
        path = path.replace("{tok}", spare["id"])
    if "{fwd}" in path:
        forward = world.api.post(
            "/1.0/networks/lan/forwards",
            params={"project": project},
            json={"host_port": 9000, "vm": "web", "vm_port": 80},
        )
        assert forward.status_code == 201, forward.text
        path = path.replace("{fwd}", str(forward.json()["id"]))
    if "{rule}" in path:
        rule = world.api.post(
            "/1.0/firewall",
            params={"project": project},
            json={"vm": "web", "direction": "out", "action": "allow"},
        )
        assert rule.status_code == 201, rule.text
        path = path.replace("{rule}", str(rule.json()["id"]))
    return path.replace("{p}", project)


CASES = [
    pytest.param(method, path, body, level, role, where, id=f"{method} {path} {role} {where}")
    for method, path, body, level in ENDPOINTS
    for role in ("viewer", "operator", "admin")
    for where in ("own", "foreign")
]


@pytest.mark.parametrize(("method", "path", "body", "level", "role", "where"), CASES)
def test_role_matrix(
    world: World, method: str, path: str, body: Any, level: int, role: str, where: str
) -> None:
    target = "alpha" if where == "own" else "beta"
    url = _expand(world, path, target)
    in_path = "{p}" in path
    # Own project: sometimes named, sometimes implied by the token; foreign: always named.
    query = None if in_path or (where == "own" and len(path) % 2) else target
    status = _call(world, world.headers("alpha", role), method, url, body, query)
    if where == "foreign":
        expected = "404"
    elif ROLE_LEVEL[role] >= level:
        expected = "allowed"
    else:
        expected = "403"
    got = "allowed" if status not in (401, 403, 404) else str(status)
    assert got == expected, f"{method} {url} as alpha/{role}: HTTP {status}"


@pytest.mark.parametrize(("method", "path", "body", "level"), ENDPOINTS)
def test_the_local_socket_may_do_everything(
    world: World, method: str, path: str, body: Any, level: int
) -> None:
    url = _expand(world, path, "beta")
    query = None if "{p}" in path else "beta"
    status = _call(world, {}, method, url, body, query)
    assert status not in (401, 403, 404), f"{method} {url} as local root: HTTP {status}"


@pytest.mark.parametrize(("method", "path", "body", "level"), ENDPOINTS)
def test_no_token_or_a_wrong_one_is_refused_over_tcp(
    world: World, method: str, path: str, body: Any, level: int
) -> None:
    url = _expand(world, path, "alpha")
    for headers in (
        TCP_HEADER,
        {"Authorization": "Bearer hgr_not-a-token"},
        {"Authorization": "Basic eDp5"},
    ):
        status = _call(world, headers, method, url, body, "alpha")
        assert status == 401, f"{method} {url} with {headers}: HTTP {status}"


def test_every_http_route_is_in_the_matrix() -> None:
    """A new route must be added to ENDPOINTS, with the role it needs."""
    spec = create_app(MagicMock()).openapi()
    listed = [(method, path) for method, path, _, _ in ENDPOINTS]
    missing = []
    for template, item in spec["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")
        for method in item:
            if not any(m == method.upper() and pattern.match(p) for m, p in listed):
                missing.append(f"{method.upper()} {template}")
    assert not missing, f"routes missing from the role matrix: {missing}"


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    viewer = world.tokens[("alpha", "viewer")]
    assert world.api.get("/1.0/vms", headers=world.headers("alpha", "viewer")).status_code == 200
    assert world.api.delete(f"/1.0/tokens/{viewer['id']}").status_code == 204
    refused = world.api.get("/1.0/vms", headers=world.headers("alpha", "viewer"))
    assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"


def test_listings_show_only_the_own_project(world: World) -> None:
    alpha = world.as_token("alpha", "admin")
    assert [p["name"] for p in alpha.get("/1.0/projects").json()] == ["alpha"]
    assert {t["project"] for t in alpha.get("/1.0/tokens").json()} == {"alpha"}
    vms = alpha.get("/1.0/vms").json()
    assert [(v["name"], v["project"]) for v in vms] == [("web", "alpha")]
    root_projects = [p["name"] for p in world.api.get("/1.0/projects").json()]
    assert root_projects == ["alpha", "beta", "default"]


def test_tokens_are_stored_as_hashes_only(world: World) -> None:
    secrets = [t["secret"] for t in world.tokens.values()]
    rows = world.platform.db.query("SELECT * FROM tokens")
    stored = " ".join(str(value) for row in rows for value in tuple(row))
    assert rows and not any(secret in stored for secret in secrets)
    listed = world.api.get("/1.0/tokens").text
    assert not any(secret in listed for secret in secrets)
