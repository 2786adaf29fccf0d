"""Client calls for the platform API: projects, tokens, operations, audit, events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # websockets is imported by the commands that open one (CLI start-up time)
    from websockets.sync.client import ClientConnection

from hangar import errors
from hangar.client.api_error import ApiError
from hangar.client.transport import Transport
from hangar.errors import HangarError

OPERATION_POLL = 1.0  # server-side wait per poll: progress shows promptly, few requests


class PlatformApi(Transport):
    """Mixed into :class:`hangar.client.client.Client`, which provides the transport."""

    def websocket(self, path: str, params: Mapping[str, str] | None = None) -> ClientConnection:
        raise NotImplementedError

    def whoami(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/1.0/whoami"))

    # --- projects ------------------------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/projects"))

    def get_project(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", f"/1.0/projects/{name}"))

    def create_project(
        self, name: str, description: str = "", quotas: Mapping[str, int | None] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "description": description, "quotas": dict(quotas or {})}
        return cast(dict[str, Any], self.request("POST", "/1.0/projects", json=body))

    def set_quotas(self, name: str, quotas: Mapping[str, int | None]) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.request("PATCH", f"/1.0/projects/{name}", json=dict(quotas))
        )

    def uplinks(self, name: str) -> list[str]:
        data = cast(dict[str, Any], self.request("GET", f"/1.0/projects/{name}/uplinks"))
        return list(data["uplinks"])

    def set_uplinks(self, name: str, uplinks: list[str]) -> list[str]:
        body = {"uplinks": uplinks}
        data = cast(dict[str, Any], self.request("PUT", f"/1.0/projects/{name}/uplinks", json=body))
        return list(data["uplinks"])

    def delete_project(self, name: str) -> None:
        self.request("DELETE", f"/1.0/projects/{name}")

    # --- tokens --------------------------------------------------------------------

    def tokens(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/tokens"))

    def create_token(self, role: str, name: str = "", project: str | None = None) -> dict[str, Any]:
        params = {"project": project} if project else None
        return cast(
            dict[str, Any],
            self.request("POST", "/1.0/tokens", json={"role": role, "name": name}, params=params),
        )

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/1.0/tokens/{token_id}")

    # --- operations ----------------------------------------------------------------

    def operations(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/operations"))

    def operation(self, op_id: str, *, wait: float = 0) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request(
                "GET", f"/1.0/operations/{op_id}", params={"wait": wait}, timeout=wait + 30
            ),
        )

    def cancel_operation(self, op_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("DELETE", f"/1.0/operations/{op_id}"))

    def wait_operation(
        self,
        op_id: str,
        *,
        timeout: float,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait for an operation to end. Returns it on success; raises its error otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.operation(
                op_id, wait=min(OPERATION_POLL, max(0.0, deadline - time.monotonic()))
            )
            if on_progress is not None:
                on_progress(op)
            if op["status"] == "success":
                return op
            if op["status"] in ("failure", "cancelled"):
                raise ApiError(500 if op["status"] == "failure" else 409, op.get("error") or {})
            if time.monotonic() > deadline:
                raise HangarError(
                    f"operation {op_id} still running after {timeout:g} s",
                    hint=f"see 'hangar operation show {op_id}'",
                )

    # --- audit and events ----------------------------------------------------------

    def audit(self, *, limit: int = 100) -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]], self.request("GET", "/1.0/audit", params={"limit": limit})
        )

    @contextmanager
    def events(self, types: str | None = None) -> Iterator[Iterator[dict[str, Any]]]:
        """Stream events (dicts) until the caller stops reading. The first one has type
        ``subscribed``: every event after it is delivered."""
        params = {"type": types} if types else None
        with self.websocket("/1.0/events", params) as connection:

            def messages() -> Iterator[dict[str, Any]]:
                from websockets.exceptions import ConnectionClosed

                try:
                    for message in connection:
                        yield cast(dict[str, Any], json.loads(message))
                except ConnectionClosed:
                    pass
                refused = closed_by_hangard(connection)
                if refused is not None:
                    raise refused

            yield messages()


# hangard refuses or ends a websocket with close code 4000 + the HTTP status it would
# have answered, and the message as the reason (api/console.py CLOSE_BASE).
_CLOSE_ERRORS: dict[int, type[HangarError]] = {
    4400: errors.InvalidInput,
    4401: errors.Unauthenticated,
    4403: errors.Forbidden,
    4404: errors.NotFound,
    4409: errors.Conflict,
}


def closed_by_hangard(connection: ClientConnection) -> HangarError | None:
    """The error a websocket closed by hangard with a 4xxx code stands for (a refused
    subscription, a revoked token), or None for an ordinary close."""
    code = connection.close_code
    if code is None or code < 4000:
        return None
    kind = _CLOSE_ERRORS.get(code, HangarError)
    return kind(connection.close_reason or f"hangard closed the stream (code {code})")
