"""``launch --count N`` as one use case (TemplateService.launch_many) behind one route
(POST /1.0/vms/batch), one client method and one CLI request: VMs NAME-1 … NAME-N,
made one after the other as single launches are; what serves one VM only refused
before anything is made; a failure halfway keeps what was made (as the CLI's loop of
requests did) and its error names those VMs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.cli import vms as cli_vms
from hangar.cli.main import cli
from hangar.client.client import Client
from tests.component.conftest import PlatformFactory
from tests.support.apps import BothListeners


@pytest.fixture
def api(make_platform: PlatformFactory) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(make_platform()))) as client:
        yield client


def _names(api: TestClient) -> list[str]:
    return sorted(vm["name"] for vm in api.get("/1.0/vms").json())


def test_a_batch_launches_name_1_to_name_n_in_one_request(api: TestClient) -> None:
    made = api.post(
        "/1.0/vms/batch",
        json={"name": "web", "image": "tiny", "memory": "128M", "count": 3, "start": False},
    )
    assert made.status_code == 201, made.text
    assert [vm["name"] for vm in made.json()] == ["web-1", "web-2", "web-3"]
    assert {vm["state"] for vm in made.json()} == {"stopped"}
    assert {vm["memory"] for vm in made.json()} == {128 * 1024**2}
    assert _names(api) == ["web-1", "web-2", "web-3"]


def test_a_batch_of_one_is_the_name_itself(api: TestClient) -> None:
    made = api.post("/1.0/vms/batch", json={"name": "web", "image": "tiny", "count": 1})
    assert made.status_code == 201, made.text
    assert [vm["name"] for vm in made.json()] == ["web"] and made.json()[0]["state"] == "running"


@pytest.mark.parametrize(
    ("nic", "text"),
    [
        ({"type": "user", "forwards": [{"host_port": 18080, "guest_port": 80}]}, "port forwards"),
        ({"type": "network", "network": "lan", "ip": "10.9.0.5"}, "fixed addresses"),
    ],
)
def test_what_serves_one_vm_is_refused_before_anything_is_made(
    api: TestClient, nic: dict[str, Any], text: str
) -> None:
    body = {"name": "web", "image": "tiny", "count": 2, "nics": [nic]}
    refused = api.post("/1.0/vms/batch", json=body)
    assert refused.status_code == 400, refused.text
    assert text in refused.json()["message"] and "one VM" in refused.json()["hint"]
    assert _names(api) == []


def test_names_are_checked_before_anything_is_made(api: TestClient) -> None:
    # NAME is valid; NAME-10 is one character too long.
    body = {"name": "a" * 61, "image": "tiny", "count": 10, "start": False}
    refused = api.post("/1.0/vms/batch", json=body)
    assert refused.status_code == 400 and "characters long" in refused.json()["message"]
    assert _names(api) == []


def test_a_failure_halfway_keeps_what_was_made_and_names_it(api: TestClient) -> None:
    assert api.post("/1.0/vms", json={"name": "web-3", "image": "tiny", "start": False}).is_success
    body = {"name": "web", "image": "tiny", "count": 4, "start": False}
    failed = api.post("/1.0/vms/batch", json=body)
    assert failed.status_code == 409, failed.text
    assert "web-3" in failed.json()["message"]
    assert failed.json()["details"]["launched"] == ["web-1", "web-2"]
    assert _names(api) == ["web-1", "web-2", "web-3"]


def test_a_count_out_of_range_is_refused(api: TestClient) -> None:
    for count in (0, 1001):
        body = {"name": "web", "image": "tiny", "count": count}
        assert api.post("/1.0/vms/batch", json=body).status_code == 400
    assert _names(api) == []


class RecordingClient(Client):
    """The real client over the in-process app; it records each request."""

    def __init__(self, http: TestClient) -> None:
        self._http = http
        self.remote = None
        self.project = None
        self._peer_checked = True
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.requests.append((method, path))
        return super().request(method, path, **kwargs)

    def _check_peer(self, response: Any) -> None:
        pass

    def __enter__(self) -> RecordingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def cli_client(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> RecordingClient:
    client = RecordingClient(api)
    monkeypatch.setattr(cli_vms, "connect", lambda: client)
    return client


def test_the_cli_launches_a_count_in_one_request(cli_client: RecordingClient) -> None:
    ran = CliRunner().invoke(cli, ["launch", "tiny", "web", "--count", "3", "--no-start"])
    assert ran.exit_code == 0, ran.output
    assert cli_client.requests == [("POST", "/1.0/vms/batch")]
    assert [line.split()[1] for line in ran.output.splitlines()] == ["web-1", "web-2", "web-3"]
    assert all(line.endswith("is stopped") for line in ran.output.splitlines())


def test_the_cli_launches_one_as_before(cli_client: RecordingClient) -> None:
    ran = CliRunner().invoke(cli, ["launch", "tiny", "web", "--no-start"])
    assert ran.exit_code == 0, ran.output
    assert cli_client.requests == [("POST", "/1.0/vms")]
    assert ran.output.splitlines()[0] == "VM web is stopped"


def test_the_cli_shows_the_error_of_the_launch_that_failed(
    api: TestClient, cli_client: RecordingClient
) -> None:
    api.post("/1.0/vms", json={"name": "web-2", "image": "tiny", "start": False})
    ran = CliRunner().invoke(cli, ["launch", "tiny", "web", "--count", "3", "--no-start"])
    assert ran.exit_code == 4, ran.output
    assert "web-2" in ran.output and "already exists" in ran.output
    assert cli_client.requests == [("POST", "/1.0/vms/batch")]
    assert _names(api) == ["web-1", "web-2"]
