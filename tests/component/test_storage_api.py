"""Storage routes over HTTP (in-process), on a Platform with a fake QEMU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from tests.component.conftest import PlatformFactory


@pytest.fixture
def api(make_platform: PlatformFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_platform())) as client:
        yield client


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


def test_import_refusals_are_http_400_with_the_reason(api: TestClient, tmp_path: Path) -> None:
    fake = tmp_path / "disguised.img"
    fake.write_bytes(b"QFI\xfb" + bytes(4092))
    refused = api.post("/1.0/images/import", json={"path": str(fake), "format": "raw"})
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "unsafe-image" and "starts like a qcow/qcow2" in body["message"]
    relative = api.post("/1.0/images/import", json={"path": "x.qcow2"})
    assert relative.status_code == 400 and "not absolute" in relative.json()["message"]


async def test_platform_start_sweeps_interrupted_imports(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    leftover = platform.paths.images / ".import-half-0badf00d"
    leftover.mkdir()
    (leftover / "disk.qcow2").write_bytes(b"partial")
    await platform.start()
    assert not leftover.exists()
    assert [i.name for i in platform.images.list()] == ["tiny"]
