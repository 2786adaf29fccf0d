"""Shared route helpers."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from hangar.services.platform import Platform


def platform_of(request: Request | HTTPConnection) -> Platform:
    platform: Platform = request.app.state.platform
    return platform
