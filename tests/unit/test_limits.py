"""hangard's connection-level limits: the descriptor limit and rate-limited accept errors."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from hangar.api.limits import (
    FD_RESERVE,
    LOCAL_CONNECTIONS,
    AcceptErrors,
    raise_fd_limit,
    tcp_connections,
)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_fd_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_tcp_cap_leaves_descriptors_for_the_rest() -> None:
    assert tcp_connections(1 << 20) == 256
    assert tcp_connections(1024) == 1024 - FD_RESERVE - LOCAL_CONNECTIONS


def test_accept_errors_are_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    handler = AcceptErrors()
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="hangard"):
            for _ in range(1000):
                handler(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    },
                )
    finally:
        loop.close()
    assert len(caplog.records) == 1 and handler.suppressed == 999
