"""Helpers for the platform API tests: an in-process app with projects and tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from hangar.services.platform import Platform


@dataclass
class World:
    """An app (via TestClient) with projects alpha and beta, each with a nat network
    'lan', a stopped VM 'web' on it with a disk snapshot 'snap', a volume 'data', and a
    token of every role in each."""

    api: TestClient
    platform: Platform
    tokens: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def headers(self, project: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[(project, role)]['secret']}"}

    def as_token(self, project: str, role: str) -> TokenClient:
        return TokenClient(self.api, self.headers(project, role))


class TokenClient:
    """Requests as a token would send them over TCP."""

    def __init__(self, api: TestClient, headers: dict[str, str]):
        self.api = api
        self.headers = headers

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.api.request(method, url, headers=self.headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)


def populate(api: TestClient, platform: Platform) -> World:
    world = World(api, platform)
    for project in ("alpha", "beta"):
        assert api.post("/1.0/projects", json={"name": project}).status_code == 201
        net = api.post(
            "/1.0/networks", params={"project": project}, json={"name": "lan", "type": "nat"}
        )
        assert net.status_code == 201, net.text
        made = api.post(
            "/1.0/vms",
            params={"project": project},
            json={
                "name": "web",
                "image": "tiny",
                "start": False,
                "nics": [{"type": "network", "network": "lan"}],
            },
        )
        assert made.status_code == 201, made.text
        snap = api.post(
            "/1.0/vms/web/snapshots", params={"project": project}, json={"name": "snap"}
        )
        assert snap.status_code == 202, snap.text
        done = api.get(f"/1.0/operations/{snap.json()['id']}", params={"wait": 10}).json()
        assert done["status"] == "success", done
        volume = api.post(
            "/1.0/volumes", params={"project": project}, json={"name": "data", "size": "1M"}
        )
        assert volume.status_code == 201, volume.text
        for role in ("viewer", "operator", "admin"):
            created = api.post(
                "/1.0/tokens",
                params={"project": project},
                json={"role": role, "name": f"{project}-{role}"},
            )
            assert created.status_code == 201, created.text
            world.tokens[(project, role)] = created.json()
    return world
