"""Storage routes over HTTP (in-process), on a Platform with a fake QEMU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from tests.component.conftest import PlatformFactory
from tests.support.apps import BothListeners


@pytest.fixture
def api(make_platform: PlatformFactory) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(make_platform()))) as client:
        yield client


def wait(api: TestClient, op: dict[str, Any], **params: str) -> dict[str, Any]:
    """Wait for an operation; return its final view."""
    got: dict[str, Any] = api.get(
        f"/1.0/operations/{op['id']}", params={"wait": 30, **params}
    ).json()
    return got


def test_openapi_has_the_storage_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/1.0/images/import", "/1.0/images/{name}", "/1.0/exports", "/1.0/vms/{name}/copy",
        "/1.0/vms/{name}/publish", "/1.0/storage/pools", "/1.0/volumes",
        "/1.0/volumes/{name}/attach", "/1.0/volumes/{name}/detach", "/1.0/vms/{name}/resize",
    ):  # fmt: skip
        assert path in paths, path


def test_volume_routes_and_errors_are_json(api: TestClient, tmp_path: Path) -> None:
    pools = api.get("/1.0/storage/pools").json()
    assert [p["name"] for p in pools] == ["default"] and pools[0]["free"] > 0
    made = api.post("/1.0/volumes", json={"name": "data", "size": "1G"})
    assert made.status_code == 201, made.text
    assert made.json()["size"] == 1024**3 and made.json()["format"] == "qcow2"
    bad = api.post("/1.0/volumes", json={"name": "Bad Name", "size": "1G"})
    assert bad.status_code == 400 and "hint" in bad.json()
    assert api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False}).is_success
    assert api.post("/1.0/volumes/data/attach", json={"vm": "web"}).json()["vm"] == "web"
    in_use = api.delete("/1.0/volumes/data")
    assert in_use.status_code == 409 and "in use by VM 'web'" in in_use.json()["message"]
    assert api.post("/1.0/volumes/data/detach", json={"vm": "web"}).json()["vm"] is None
    assert api.delete("/1.0/volumes/data").status_code == 204


def test_import_refusals_are_failed_operations_with_the_reason(
    api: TestClient, tmp_path: Path
) -> None:
    fake = tmp_path / "disguised.img"
    fake.write_bytes(b"QFI\xfb" + bytes(4092))
    started = api.post("/1.0/images/import", json={"path": str(fake), "format": "raw"})
    assert started.status_code == 202 and started.json()["type"] == "image-import"
    refused = wait(api, started.json())
    assert refused["status"] == "failure"
    error = refused["error"]
    assert error["error"] == "unsafe-image" and "starts like a qcow/qcow2" in error["message"]
    relative = wait(api, api.post("/1.0/images/import", json={"path": "x.qcow2"}).json())
    assert relative["status"] == "failure" and "not absolute" in relative["error"]["message"]
    assert [i["name"] for i in api.get("/1.0/images").json()] == ["tiny"]


def test_copy_is_an_operation_whose_result_is_the_new_vm(api: TestClient) -> None:
    assert api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False}).is_success
    started = api.post("/1.0/vms/web/copy", json={"name": "web2", "full": True})
    assert started.status_code == 202, started.text
    done = wait(api, started.json())
    assert done["status"] == "success", done
    assert done["result"]["name"] == "web2" and done["progress_percent"] == 100
    assert sorted(v["name"] for v in api.get("/1.0/vms").json()) == ["web", "web2"]
    missing = api.post("/1.0/vms/nope/copy", json={"name": "x"})
    assert missing.status_code == 404  # at once, not as a failed operation


def test_volumes_belong_to_a_project(api: TestClient) -> None:
    for project in ("alpha", "beta"):
        assert api.post("/1.0/projects", json={"name": project}).status_code == 201
        made = api.post(
            "/1.0/volumes", params={"project": project}, json={"name": "data", "size": "1M"}
        )
        assert made.status_code == 201, made.text  # the same name in two projects
    alpha = api.get("/1.0/volumes", params={"project": "alpha"}).json()
    beta = api.get("/1.0/volumes", params={"project": "beta"}).json()
    assert [(v["name"], v["project"]) for v in alpha] == [("data", "alpha")]
    assert alpha[0]["path"] != beta[0]["path"]
    token = api.post("/1.0/tokens", params={"project": "alpha"}, json={"role": "admin"}).json()
    as_alpha = {"Authorization": f"Bearer {token['secret']}"}
    assert (
        api.get("/1.0/volumes/data", params={"project": "beta"}, headers=as_alpha).status_code
        == 404
    )
    assert (
        api.delete("/1.0/volumes/data", params={"project": "beta"}, headers=as_alpha).status_code
        == 404
    )
    assert [v["project"] for v in api.get("/1.0/volumes", headers=as_alpha).json()] == ["alpha"]
    busy = api.delete("/1.0/projects/beta")
    assert busy.status_code == 409 and "volume" in busy.json()["message"]
    assert api.delete("/1.0/volumes/data", params={"project": "beta"}).status_code == 204
    assert api.delete("/1.0/projects/beta").status_code == 204


def test_volumes_and_disk_growth_count_against_the_disk_quota(api: TestClient) -> None:
    assert api.post("/1.0/projects", json={"name": "small"}).status_code == 201
    assert api.patch("/1.0/projects/small", json={"max_disk": 3 * 1024**3}).is_success
    q = {"project": "small"}
    assert api.post("/1.0/volumes", params=q, json={"name": "a", "size": "2G"}).status_code == 201
    over = api.post("/1.0/volumes", params=q, json={"name": "b", "size": "2G"})
    assert over.status_code == 422 and "disk quota" in over.json()["message"], over.text
    grow = api.post("/1.0/volumes/a/resize", params=q, json={"size": "4G"})
    assert grow.status_code == 422
    usage = api.get("/1.0/projects/small").json()["usage"]
    assert usage["disk"] == 2 * 1024**3
    assert [v["name"] for v in api.get("/1.0/volumes", params=q).json()] == ["a"]


async def test_platform_start_sweeps_interrupted_imports(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    leftover = platform.paths.images / ".import-half-0badf00d"
    leftover.mkdir()
    (leftover / "disk.qcow2").write_bytes(b"partial")
    await platform.start()
    assert not leftover.exists()
    assert [i.name for i in platform.images.list()] == ["tiny"]
