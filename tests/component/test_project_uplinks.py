"""A project's networks use only the host uplinks the host administrator allowed it
(issue 14, item 8: a project admin joined another project's hangar bridge and saw the
other project's VM, and the errors enumerated the host's interfaces)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def _bridged(world: World, project: str, uplink: str, name: str = "wan") -> Any:
    return world.as_token(project, "admin").post(
        "/1.0/networks", json={"name": name, "type": "bridged", "uplink": uplink}
    )


def test_a_project_admin_may_not_pick_a_host_bridge_it_was_not_given(world: World) -> None:
    for uplink in ("br0", "nosuch0", "eth0"):
        answer = _bridged(world, "alpha", uplink)
        assert answer.status_code == 403, answer.text
        # The same answer whether the interface exists or not: nothing is enumerated.
        assert "does not exist" not in answer.text and "not a bridge" not in answer.text
    nat = world.as_token("alpha", "admin").post(
        "/1.0/networks", json={"name": "out", "type": "nat", "uplink": "eth0"}
    )
    assert nat.status_code == 403, nat.text
    assert {n["config"]["name"] for n in world.as_token("alpha", "viewer").get(
        "/1.0/networks").json()} == {"lan"}  # fmt: skip


def test_the_host_administrator_allows_uplinks_per_project(world: World) -> None:
    refused = world.as_token("alpha", "admin").request(
        "PUT", "/1.0/projects/alpha/uplinks", json={"uplinks": ["br0"]}
    )
    assert refused.status_code == 403
    allowed = world.api.put("/1.0/projects/alpha/uplinks", json={"uplinks": ["br0"]})
    assert allowed.status_code == 200 and allowed.json()["uplinks"] == ["br0"], allowed.text
    made = _bridged(world, "alpha", "br0")
    assert made.status_code == 201, made.text
    assert _bridged(world, "beta", "br0").status_code == 403
    shown = world.as_token("alpha", "viewer").get("/1.0/projects/alpha/uplinks")
    assert shown.json() == {"uplinks": ["br0"]}
    bad = world.api.put("/1.0/projects/alpha/uplinks", json={"uplinks": ["a b"]})
    assert bad.status_code == 400


def test_no_one_joins_the_bridge_of_a_hangar_network(world: World) -> None:
    beta_lan = next(
        n["config"] for n in world.as_token("beta", "viewer").get("/1.0/networks").json()
    )
    bridge = beta_lan["bridge"]
    world.api.put("/1.0/projects/alpha/uplinks", json={"uplinks": [bridge]})
    assert _bridged(world, "alpha", bridge).status_code == 409
    local = world.api.post(
        "/1.0/networks",
        params={"project": "alpha"},
        json={"name": "wan", "type": "bridged", "uplink": bridge},
    )
    assert local.status_code == 409, local.text
