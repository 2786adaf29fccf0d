"""An error hangard answered, rebuilt on the client side with the exit code of its kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hangar.errors import HangarError


def _exit_codes() -> dict[str, int]:
    codes: dict[str, int] = {}
    stack: list[type[HangarError]] = [HangarError]
    while stack:
        cls = stack.pop()
        codes[cls.kind] = cls.exit_code
        stack.extend(cls.__subclasses__())
    return codes


_EXIT_CODES = _exit_codes()


class ApiError(HangarError):
    """An error answered by hangard, rebuilt on the client side."""

    def __init__(self, status: int, body: Mapping[str, Any]):
        super().__init__(
            str(body.get("message", f"hangard answered HTTP {status}")),
            hint=str(body.get("hint", "")),
            details=dict(body.get("details") or {}),
            action=str(body.get("action") or ""),  # absent from an older hangard
        )
        self.status = status
        self.remote_kind = str(body.get("error", "error"))
        self.remote_exit_code = _EXIT_CODES.get(self.remote_kind, HangarError.exit_code)
