"""What the client's API mixins need from the client: one way to send a request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Transport:
    """Base of the API mixins; :class:`hangar.client.client.Client` implements ``request``."""

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        raise NotImplementedError
