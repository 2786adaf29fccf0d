"""The body guard's per-route limits, on a small app of its own (the local socket's
requests, so no token is needed): the default cap, a larger one where a route asks."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from hangar.api.guard import DEFAULT_BODY_LIMIT, GuardMiddleware, body_limit
from tests.support.apps import BothListeners


def make_app() -> TestClient:
    app = FastAPI()
    app.add_middleware(GuardMiddleware)

    @app.post("/small")
    async def small(request: Request) -> int:
        return len(await request.body())

    @app.post("/big")
    @body_limit(4 * DEFAULT_BODY_LIMIT)
    async def big(request: Request) -> int:
        return len(await request.body())

    return TestClient(BothListeners(app))


def test_the_default_limit_and_a_route_with_a_larger_one() -> None:
    api = make_app()
    over = b"x" * (DEFAULT_BODY_LIMIT + 1)
    assert api.post("/small", content=b"x" * DEFAULT_BODY_LIMIT).json() == DEFAULT_BODY_LIMIT
    refused = api.post("/small", content=over)
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"] == "body-too-large"
    assert refused.json()["details"]["limit"] == DEFAULT_BODY_LIMIT
    assert api.post("/big", content=over).json() == len(over)


def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    api = make_app()

    def chunks() -> object:  # no Content-Length: chunked, 4 MiB in all
        for _ in range(64):
            yield b"x" * 65536

    refused = api.post("/small", content=chunks())  # type: ignore[arg-type]
    assert refused.status_code == 413, refused.text
