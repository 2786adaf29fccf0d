"""An operator token cannot make hangar use a folder or file it did not write itself.

Today's attack (issue 14, item 1): ``POST /1.0/vms`` with ``image`` an absolute path
or ``..`` picked a folder the attacker wrote, whose image.json named any host file as
the disk (a qcow2 with a raw backing file pointing at the TLS key was booted and read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.errors import InvalidInput
from tests.component.conftest import PlatformFactory
from tests.component.platform_app import World, populate
from tests.support.apps import BothListeners

NOBODY = 65534


@pytest.fixture
def world(make_platform: PlatformFactory) -> Iterator[World]:
    platform = make_platform()
    with TestClient(BothListeners(create_app(platform))) as api:
        yield populate(api, platform)


def _attacker_image(folder: Path, disk: str = "disk.qcow2") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "disk.qcow2").write_bytes(b"QFI\xfb")
    (folder / "image.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "name": folder.name,
                "recipe_hash": "x",
                "created_at": "2026-01-01T00:00:00",
                "disk": disk,
                "disk_virtual_size": 1 << 20,
            }
        )
    )
    return folder


@pytest.mark.parametrize("image", ["/tmp/hg-evil-image", "../../../tmp/hg-evil-image", "a/../b"])
def test_a_launch_names_only_images_in_the_store(world: World, image: str) -> None:
    evil = _attacker_image(Path("/tmp/hg-evil-image"))
    try:
        answer = world.as_token("alpha", "operator").post(
            "/1.0/vms", params={"project": "alpha"}, json={"name": "x", "image": image}
        )
        assert answer.status_code == 400, answer.text
        assert "image name" in answer.json()["message"], answer.json()
        assert world.platform.vms.repo.find("x", "alpha") is None
    finally:
        for path in evil.iterdir():
            path.unlink()
        evil.rmdir()


def test_a_folder_another_user_put_in_the_store_is_never_used(world: World) -> None:
    store = world.platform.images.store
    evil = _attacker_image(store.root / "planted")
    os.chown(evil, NOBODY, NOBODY)
    os.chown(evil / "image.json", NOBODY, NOBODY)
    assert "planted" not in [m.name for m in store.list()]
    with pytest.raises(InvalidInput, match="not made by hangar"):
        store.get("planted")
    answer = world.as_token("alpha", "operator").post(
        "/1.0/vms", params={"project": "alpha"}, json={"name": "x", "image": "planted"}
    )
    assert answer.status_code == 400, answer.text
    assert world.platform.vms.repo.find("x", "alpha") is None


def test_a_writable_manifest_or_a_disk_out_of_the_folder_is_refused(world: World) -> None:
    store = world.platform.images.store
    open_to_all = _attacker_image(store.root / "writable")
    (open_to_all / "image.json").chmod(0o666)
    with pytest.raises(InvalidInput, match="not made by hangar"):
        store.get("writable")
    outside = _attacker_image(store.root / "outside", disk="../../../tls/server.key")
    with pytest.raises(InvalidInput, match="not a plain file name"):
        store.get(outside.name)
    linked = _attacker_image(store.root / "linked")
    (linked / "disk.qcow2").unlink()
    os.symlink("/etc/shadow", linked / "disk.qcow2")
    with pytest.raises(InvalidInput, match="symbolic link"):
        store.get("linked")
    assert {"writable", "outside", "linked"}.isdisjoint(m.name for m in store.list())
