"""Client calls for reaching inside guests: agent exec and info, screenshots, the ISO."""

from __future__ import annotations

import base64
from typing import Any, cast

from hangar.client.transport import Transport


class GuestsApi(Transport):
    """Mixed into :class:`hangar.client.client.Client`, which provides the transport."""

    def exec(
        self, name: str, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Run ``argv`` in the guest: ``exit_code``, ``stdout``, ``stderr``."""
        body: dict[str, Any] = {"command": argv, "timeout": timeout}
        if stdin is not None:
            body["input"] = base64.b64encode(stdin).decode()
        return cast(
            dict[str, Any],
            self.request("POST", f"/1.0/vms/{name}/exec", json=body, timeout=timeout + 30),
        )

    def guest_info(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", f"/1.0/vms/{name}/guest", timeout=60))

    def detach_iso(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/iso/detach"))
