"""Before any route runs: authenticate from the headers, then let the body in only up to
the route's limit. Nothing a client sends is buffered before it is known who sent it.

* A TCP request without a valid token is answered 401 at once, its body never read,
  and the connection closed (``Connection: close``): a 300 MB unauthenticated POST
  costs hangard a header's worth of memory.
* A body is capped per route (:data:`DEFAULT_BODY_LIMIT` unless the endpoint was
  decorated with :func:`body_limit`), counted as it streams in: a declared
  Content-Length over the cap is refused before reading, and a chunked body is cut
  off at the cap. Either answers 413.
* A body that stops arriving for :data:`BODY_IDLE_TIMEOUT` seconds answers 408.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hangar.api.auth import LOCAL_MARK, authenticate
from hangar.errors import BodyTooLarge, HangarError, RequestTimeout, Unauthenticated

DEFAULT_BODY_LIMIT = 1024 * 1024  # every JSON body hangar takes is far smaller
BODY_IDLE_TIMEOUT = 30.0
LIMIT_ATTR = "hangar_body_limit"
# FastAPI's schema and docs pages: public (they read no body and hold no data).
PUBLIC = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

F = TypeVar("F", bound=Callable[..., Any])


def body_limit(size: int) -> Callable[[F], F]:
    """Decorate an endpoint (under its route decorator) whose body may exceed the default."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, LIMIT_ATTR, size)
        return endpoint

    return mark


def limit_of(scope: Scope) -> int:
    # Starlette's router puts the matched endpoint into the scope before the route
    # reads its body, so the limit is looked up when the body is first asked for.
    return int(getattr(scope.get("endpoint"), LIMIT_ATTR, DEFAULT_BODY_LIMIT))


async def answer(send: Send, exc: HangarError) -> None:
    """Send ``exc`` as hangar's JSON error and close the connection after it: the
    unread rest of the body is not worth reading."""
    body = json.dumps(exc.to_dict()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Refused(Exception):
    def __init__(self, error: HangarError):
        super().__init__(str(error))
        self.error = error


class GuardMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        public = scope["method"] in ("GET", "HEAD") and scope["path"] in PUBLIC
        if not scope.get(LOCAL_MARK) and not public:
            try:
                authenticate(HTTPConnection(scope))  # from the headers alone
            except Unauthenticated as exc:
                await answer(send, exc)
                return
        refused: HangarError | None = None
        started = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal received, refused
            limit = limit_of(scope)
            if received == 0:
                declared = HTTPConnection(scope).headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    refused = too_large(limit)
                    raise _Refused(refused)
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_TIMEOUT)
            except TimeoutError:
                refused = RequestTimeout(
                    f"no part of the request body came for {BODY_IDLE_TIMEOUT:.0f} s",
                    hint="send the whole body without pausing",
                )
                raise _Refused(refused) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = too_large(limit)
                    raise _Refused(refused)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None:
                # The app turned the refusal into an answer of its own (FastAPI makes a
                # failed body read a 400): send ours instead, once.
                if not started:
                    started = True
                    await answer(send, refused)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _Refused as exc:
            if not started:
                await answer(send, exc.error)


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the request body is over this route's limit of {limit} bytes",
        hint="send a smaller body",
        details={"limit": limit},
    )
