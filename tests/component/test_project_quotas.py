"""Quotas are the host administrator's, and a new project gets sane defaults
(issue 14, item 9: a project admin lifted its own limits with
``PATCH /1.0/projects/P`` and nulls, answered 200)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.services.projects import DEFAULT_QUOTAS
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners

UNLIMITED = {key: None for key in DEFAULT_QUOTAS}


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
@pytest.mark.parametrize(
    "change", [UNLIMITED, {"max_instances": 100_000}, {"max_memory": 2**40}, {}]
)
def test_no_project_token_changes_its_own_quotas(
    world: World, role: str, change: dict[str, int | None]
) -> None:
    before = world.api.get("/1.0/projects/alpha").json()["quotas"]
    answer = world.as_token("alpha", role).request("PATCH", "/1.0/projects/alpha", json=change)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "forbidden"
    assert "host administrator" in answer.json()["message"]
    assert world.api.get("/1.0/projects/alpha").json()["quotas"] == before == DEFAULT_QUOTAS


def test_another_projects_quotas_answer_404_as_if_it_did_not_exist(world: World) -> None:
    for target in ("beta", "nosuch"):
        answer = world.as_token("alpha", "admin").request(
            "PATCH", f"/1.0/projects/{target}", json=UNLIMITED
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"] == f"no project named '{target}'"
    assert world.api.get("/1.0/projects/beta").json()["quotas"] == DEFAULT_QUOTAS


def test_the_host_administrator_sets_any_value_or_none(world: World) -> None:
    raised = world.api.patch("/1.0/projects/alpha", json={"max_cpus": 64, "max_disk": None})
    assert raised.status_code == 200, raised.text
    assert raised.json()["quotas"] == {**DEFAULT_QUOTAS, "max_cpus": 64, "max_disk": None}
    lifted = world.api.patch("/1.0/projects/alpha", json=UNLIMITED)
    assert lifted.status_code == 200 and lifted.json()["quotas"] == UNLIMITED
    # ... and the token now sees (but still cannot change) what the host admin set.
    seen = world.as_token("alpha", "admin").get("/1.0/projects/alpha").json()["quotas"]
    assert seen == UNLIMITED


def test_a_new_project_gets_the_defaults_for_every_limit_left_out(world: World) -> None:
    assert DEFAULT_QUOTAS == {
        "max_instances": 10,
        "max_cpus": 16,
        "max_memory": 32 * 1024**3,
        "max_disk": 200 * 1024**3,
    }
    plain = world.api.post("/1.0/projects", json={"name": "plain"})
    assert plain.status_code == 201 and plain.json()["quotas"] == DEFAULT_QUOTAS, plain.text
    some = world.api.post("/1.0/projects", json={"name": "some", "quotas": {"max_cpus": 2}})
    assert some.json()["quotas"] == {**DEFAULT_QUOTAS, "max_cpus": 2}, some.text
    # An explicit null is the host admin saying "no limit".
    free = world.api.post("/1.0/projects", json={"name": "free", "quotas": UNLIMITED})
    assert free.json()["quotas"] == UNLIMITED, free.text


def test_the_default_project_stays_unlimited(world: World) -> None:
    assert world.api.get("/1.0/projects/default").json()["quotas"] == UNLIMITED


def test_a_defaulted_project_refuses_the_eleventh_vm(world: World) -> None:
    world.api.post("/1.0/projects", json={"name": "plain"})
    for n in range(10):
        made = world.api.post(
            "/1.0/vms",
            params={"project": "plain"},
            json={"name": f"vm{n}", "image": "tiny", "start": False, "cpus": 1},
        )
        assert made.status_code == 201, made.text
    over = world.api.post(
        "/1.0/vms",
        params={"project": "plain"},
        json={"name": "vm10", "image": "tiny", "start": False},
    )
    assert over.status_code == 422 and "instances quota: limit 10" in over.json()["message"]
    assert "host administrator" in over.json()["hint"]
