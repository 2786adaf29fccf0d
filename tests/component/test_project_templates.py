"""A project's template (a fork's) is that project's alone; the host administrator
shares it. Issue 14, item 2: another project's operator listed and launched a fork's
template and read the first project's files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.runner import CommandResult
from hangar.services.templates.manifest import without_secrets
from hangar.services.templates.standby import launched_seed
from hangar.spec.vm import CloudInit, VMCreate
from tests.component.conftest import PlatformFactory, install_image
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners
from tests.support.factories import tiny_manifest, warm_state
from tests.support.recording_runner import RecordingRunner


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    install_image(platform.paths, tiny_manifest(name="fork-web-0a1b2c3d", project="alpha"))
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def _names(world: World, project: str) -> set[str]:
    answer = world.as_token(project, "viewer").get("/1.0/images")
    assert answer.status_code == 200, answer.text
    return {image["name"] for image in answer.json()}


def test_only_its_project_lists_gets_and_launches_it(world: World) -> None:
    assert "fork-web-0a1b2c3d" in _names(world, "alpha")
    assert _names(world, "beta") == {"tiny"}
    beta = world.as_token("beta", "operator")
    assert beta.get("/1.0/images/fork-web-0a1b2c3d").status_code == 404
    launch = beta.post("/1.0/vms", json={"name": "thief", "image": "fork-web-0a1b2c3d"})
    assert launch.status_code == 404, launch.text
    assert world.platform.vms.repo.find("thief", "beta") is None
    assert beta.request("DELETE", "/1.0/images/fork-web-0a1b2c3d").status_code == 404
    alpha = world.as_token("alpha", "operator")
    made = alpha.post(
        "/1.0/vms", json={"name": "mine", "image": "fork-web-0a1b2c3d", "start": False}
    )
    assert made.status_code == 201, made.text


def test_the_host_administrator_shares_it_and_projects_delete_only_their_own(
    world: World,
) -> None:
    alpha_admin = world.as_token("alpha", "admin")
    shared = alpha_admin.request("DELETE", "/1.0/images/tiny")
    assert shared.status_code == 403, shared.text
    refused = alpha_admin.request("PATCH", "/1.0/images/fork-web-0a1b2c3d", json={"project": None})
    assert refused.status_code == 403
    answer = world.api.patch("/1.0/images/fork-web-0a1b2c3d", json={"project": None})
    assert answer.status_code == 200 and answer.json()["project"] is None, answer.text
    assert "fork-web-0a1b2c3d" in _names(world, "beta")
    gone = world.api.patch("/1.0/images/fork-web-0a1b2c3d", json={"project": "nowhere"})
    assert gone.status_code == 404
    back = world.api.patch("/1.0/images/fork-web-0a1b2c3d", json={"project": "alpha"})
    assert back.status_code == 200
    # The VMs' disks are linked clones of tiny's (what qemu-img says of the fake's disks).
    backing = str(world.platform.paths.images / "tiny" / "disk.qcow2")
    runner = cast(RecordingRunner, world.platform.transfer.runner)
    runner.on(
        ["qemu-img", "info"],
        lambda argv: CommandResult(tuple(argv), 0, json.dumps({"backing-filename": backing}), ""),
    )
    deleted = world.as_token("alpha", "operator").request("DELETE", "/1.0/images/fork-web-0a1b2c3d")
    assert deleted.status_code == 204, deleted.text
    assert "fork-web-0a1b2c3d" not in _names(world, "alpha")


def test_a_manifest_never_carries_keys_or_user_data_and_a_launch_takes_only_its_own() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBv secret@source"
    seed = CloudInit(hostname="src", user="debian", ssh_keys=(key,), user_data="#cloud-config\n")
    config = warm_state(cloud_init=seed).config
    shown = without_secrets(config)
    assert shown.cloud_init is not None
    assert shown.cloud_init.ssh_keys == () and shown.cloud_init.user_data is None
    assert key not in shown.model_dump_json()
    launched = launched_seed(seed, VMCreate(name="new", image="t"))
    assert launched is not None and launched.ssh_keys == () and launched.user_data is None
