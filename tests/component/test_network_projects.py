"""Networks belong to projects: through the in-process API, with tokens of two projects.

Projects alpha and beta each have a nat network 'lan' and a stopped VM 'web' on it
(tests/component/platform_app.py): the same names, so anything keyed by name alone
would collide. Links are in memory and dnsmasq is a stand-in (tests/support/fake_net.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.services.net.nft_render import render_ruleset
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners
from tests.support.fake_recipe import FakeRecipe


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    platform.images.recipes = {"tiny": FakeRecipe(step_seconds=0.05)}
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def as_root(world: World, method: str, url: str, project: str, **kwargs: Any) -> Any:
    return world.api.request(method, url, params={"project": project}, **kwargs)


def forward(world: World, project: str, host_port: int, vm: str = "web") -> Any:
    body = {"host_port": host_port, "vm": vm, "vm_port": 80}
    return as_root(world, "POST", "/1.0/networks/lan/forwards", project, json=body)


def rule(world: World, project: str, **spec: Any) -> Any:
    body = {"vm": "web", "direction": "in", "action": "deny", **spec}
    return as_root(world, "POST", "/1.0/firewall", project, json=body)


def web(world: World, project: str) -> dict[str, Any]:
    return dict(as_root(world, "GET", "/1.0/vms/web", project).json())


def test_a_token_sees_and_changes_only_its_own_projects_networks(world: World) -> None:
    alpha = world.as_token("alpha", "admin")
    beta_lan = as_root(world, "GET", "/1.0/networks/lan", "beta").json()["config"]

    listed = alpha.get("/1.0/networks").json()
    assert [(n["config"]["project"], n["config"]["name"]) for n in listed] == [("alpha", "lan")]
    own = alpha.get("/1.0/networks/lan").json()
    assert own["config"]["project"] == "alpha" and own["config"]["id"] != beta_lan["id"]
    assert own["vms"] == ["web"]

    # Naming beta: 404 for everything, as if it did not exist.
    for method, url, body in [
        ("GET", "/1.0/networks", None),
        ("GET", "/1.0/networks/lan", None),
        ("POST", "/1.0/networks", {"name": "x", "type": "isolated"}),
        ("DELETE", "/1.0/networks/lan", None),
        ("GET", "/1.0/forwards", None),
        ("GET", "/1.0/firewall", None),
    ]:
        answer = alpha.request(method, url, params={"project": "beta"}, json=body)
        assert answer.status_code == 404, f"{method} {url}: {answer.status_code}"

    # A network only beta has is unknown in alpha, whichever route names it.
    db = as_root(world, "POST", "/1.0/networks", "beta", json={"name": "db", "type": "isolated"})
    assert db.status_code == 201
    for method, url, body in [
        ("GET", "/1.0/networks/db", None),
        ("DELETE", "/1.0/networks/db", None),
        ("POST", "/1.0/networks/lan/peers", {"network": "db"}),
        ("GET", "/1.0/forwards?network=db", None),
        ("POST", "/1.0/vms/web/nics", {"network": "db"}),
    ]:
        answer = alpha.request(method, url, json=body)
        assert answer.status_code == 404, f"{method} {url}: {answer.status_code} {answer.text}"
        assert "project 'alpha'" in answer.json()["message"]

    # Beta's forward and rule ids are not alpha's to see or delete.
    beta_forward = forward(world, "beta", 8081).json()
    beta_rule = rule(world, "beta").json()
    assert alpha.get("/1.0/forwards").json() == []
    assert alpha.get("/1.0/firewall").json() == []
    assert alpha.request("DELETE", f"/1.0/forwards/{beta_forward['id']}").status_code == 404
    assert alpha.request("DELETE", f"/1.0/firewall/{beta_rule['id']}").status_code == 404
    assert [f["id"] for f in as_root(world, "GET", "/1.0/forwards", "beta").json()] == [
        beta_forward["id"]
    ]
    assert [r["id"] for r in as_root(world, "GET", "/1.0/firewall", "beta").json()] == [
        beta_rule["id"]
    ]
    # Nor are beta's networks: both still exist.
    assert as_root(world, "GET", "/1.0/networks/lan", "beta").status_code == 200
    assert as_root(world, "GET", "/1.0/networks/db", "beta").status_code == 200


def test_network_names_are_per_project_and_subnets_per_host(world: World) -> None:
    alpha = world.as_token("alpha", "admin")
    again = alpha.post("/1.0/networks", json={"name": "lan", "type": "nat"})
    assert again.status_code == 409 and "project 'alpha'" in again.json()["message"]
    beta_subnet = as_root(world, "GET", "/1.0/networks/lan", "beta").json()["config"]["subnet"]
    clash = alpha.post(
        "/1.0/networks", json={"name": "mine", "type": "isolated", "subnet": beta_subnet}
    )
    assert clash.status_code == 409
    # The network it overlaps is beta's: its name is not told to alpha.
    assert "another project" in clash.json()["message"] and "lan" not in clash.json()["message"]


def test_viewers_read_operators_forward_admins_make_networks(world: World) -> None:
    viewer, operator = world.as_token("alpha", "viewer"), world.as_token("alpha", "operator")
    assert viewer.get("/1.0/networks").status_code == 200
    assert viewer.post("/1.0/networks", json={"name": "x", "type": "isolated"}).status_code == 403
    made = operator.post(
        "/1.0/networks/lan/forwards", json={"host_port": 8080, "vm": "web", "vm_port": 80}
    )
    assert made.status_code == 201 and made.json()["project"] == "alpha"
    refused = operator.post("/1.0/networks", json={"name": "x", "type": "isolated"})
    assert refused.status_code == 403


def test_same_named_vms_in_two_projects_keep_their_own_forwards_and_rules(world: World) -> None:
    alpha_web, beta_web = web(world, "alpha"), web(world, "beta")
    alpha_ip, beta_ip = alpha_web["addresses"][0]["ip"], beta_web["addresses"][0]["ip"]
    assert alpha_ip != beta_ip  # two subnets: the host routes both

    made_a = forward(world, "alpha", 8080)
    made_b = forward(world, "beta", 8081)
    assert made_a.status_code == made_b.status_code == 201
    assert (made_a.json()["vm_ip"], made_b.json()["vm_ip"]) == (alpha_ip, beta_ip)
    rule_a = rule(world, "alpha", protocol="tcp", port=22).json()
    rule_b = rule(world, "beta", action="allow", protocol="icmp").json()
    assert (rule_a["vm_id"], rule_b["vm_id"]) == (alpha_web["id"], beta_web["id"])

    # A host port is the host's: beta cannot take alpha's, and is not told whose it is.
    taken = forward(world, "beta", 8080)
    assert taken.status_code == 409
    assert "another project" in taken.json()["message"] and "web" not in taken.json()["message"]

    # The ruleset applies each rule to its own project's "web" only.
    ruleset = render_ruleset(world.platform.networks._state())
    tap_a = world.platform.vms.repo.by_id(alpha_web["id"]).config.nics[0].tap  # type: ignore[union-attr]
    tap_b = world.platform.vms.repo.by_id(beta_web["id"]).config.nics[0].tap  # type: ignore[union-attr]
    chain_a = ruleset.split(f"chain in_{tap_a} {{")[1].split("}")[0]
    chain_b = ruleset.split(f"chain in_{tap_b} {{")[1].split("}")[0]
    assert f"# rule {rule_a['id']}" in chain_a and f"# rule {rule_b['id']}" not in chain_a
    assert f"# rule {rule_b['id']}" in chain_b and f"# rule {rule_a['id']}" not in chain_b
    assert f"tcp dport 8080 dnat ip to {alpha_ip}:80" in ruleset
    assert f"tcp dport 8081 dnat ip to {beta_ip}:80" in ruleset

    # Deleting alpha's web takes its forward and rule along, and nothing of beta's.
    assert as_root(world, "DELETE", "/1.0/vms/web", "alpha").status_code == 204
    assert as_root(world, "GET", "/1.0/forwards", "alpha").json() == []
    assert as_root(world, "GET", "/1.0/firewall", "alpha").json() == []
    rows = world.platform.db.query(
        "SELECT vm_id FROM forwards UNION ALL SELECT vm_id FROM firewall_rules"
    )
    assert {r["vm_id"] for r in rows} == {beta_web["id"]}
    assert [f["id"] for f in as_root(world, "GET", "/1.0/forwards", "beta").json()] == [
        made_b.json()["id"]
    ]
    # A new alpha "web" starts with no forwards or rules of the old one.
    relaunch = as_root(
        world,
        "POST",
        "/1.0/vms",
        "alpha",
        json={
            "name": "web",
            "image": "tiny",
            "start": False,
            "nics": [{"type": "network", "network": "lan"}],
        },
    )
    assert relaunch.status_code == 201, relaunch.text
    assert as_root(world, "GET", "/1.0/firewall", "alpha").json() == []
    assert "8080" not in render_ruleset(world.platform.networks._state())


def test_a_vm_row_deleted_takes_its_forwards_and_rules_along(world: World) -> None:
    """The database itself drops them (ON DELETE CASCADE), whatever deletes the VM."""
    forward(world, "alpha", 8080)
    rule(world, "alpha")
    vm_id = web(world, "alpha")["id"]
    world.platform.vms.repo.delete(vm_id)
    for table in ("forwards", "firewall_rules"):
        assert world.platform.db.query(f"SELECT * FROM {table} WHERE vm_id = ?", (vm_id,)) == []


def test_a_project_with_networks_cannot_be_deleted(world: World) -> None:
    api = world.api
    assert api.post("/1.0/projects", json={"name": "gamma"}).status_code == 201
    made = as_root(world, "POST", "/1.0/networks", "gamma", json={"name": "n", "type": "isolated"})
    assert made.status_code == 201
    refused = api.delete("/1.0/projects/gamma")
    assert refused.status_code == 409
    assert "network" in refused.json()["message"] and refused.json()["details"]["networks"] == 1
    assert as_root(world, "DELETE", "/1.0/networks/n", "gamma").status_code == 204
    assert api.delete("/1.0/projects/gamma").status_code == 204


def test_network_changes_are_audited(world: World) -> None:
    alpha = world.as_token("alpha", "admin")
    assert alpha.post("/1.0/networks", json={"name": "x", "type": "isolated"}).status_code == 201
    assert alpha.request("DELETE", "/1.0/networks/x").status_code == 204
    assert (
        alpha.request("DELETE", "/1.0/networks/lan", params={"project": "beta"}).status_code == 404
    )
    entries = world.api.get("/1.0/audit", params={"project": "alpha"}).json()
    rows = [(e["actor_name"], e["action"], e["status"], e["resource"]) for e in entries]
    assert ("alpha-admin", "create_network", 201, "POST /1.0/networks name=x") in rows
    assert ("alpha-admin", "delete_network", 204, "DELETE /1.0/networks/x") in rows
    # The refused attempt on beta is audited in alpha's own log, never in beta's.
    assert ("alpha-admin", "delete_network", 404, "DELETE /1.0/networks/lan") in rows
    beta_rows = world.api.get("/1.0/audit", params={"project": "beta"}).json()
    assert not any(e["actor_name"] == "alpha-admin" for e in beta_rows)


def test_network_create_and_delete_are_published(world: World) -> None:
    alpha = world.as_token("alpha", "admin")
    with world.api.websocket_connect("/1.0/events?type=network&project=alpha") as ws:
        assert json.loads(ws.receive_text())["type"] == "subscribed"
        assert (
            alpha.post("/1.0/networks", json={"name": "x", "type": "isolated"}).status_code == 201
        )
        # Beta's network changes are not alpha's events.
        other = as_root(
            world, "POST", "/1.0/networks", "beta", json={"name": "y", "type": "isolated"}
        )
        assert other.status_code == 201
        assert alpha.request("DELETE", "/1.0/networks/x").status_code == 204
        events = [json.loads(ws.receive_text()) for _ in range(2)]
    assert [
        (e["type"], e["project"], e["data"]["change"], e["data"]["network"]) for e in events
    ] == [
        ("network", "alpha", "created", "x"),
        ("network", "alpha", "deleted", "x"),
    ]
