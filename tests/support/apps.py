"""One in-process app that plays both of hangard's listeners, for TestClient tests.

A request that carries a bearer token, or the header ``x-test-transport: tcp``, is
treated as if it came over TCP; any other as if from the local unix socket (the
host administrator). hangard itself never does this: there, each listener decides.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from hangar.api.auth import mark_local

TCP_HEADER = {"x-test-transport": "tcp"}


class BothListeners:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            remote = b"authorization" in headers or headers.get(b"x-test-transport") == b"tcp"
            if not remote:
                scope = mark_local(scope)
        await self.app(scope, receive, send)
