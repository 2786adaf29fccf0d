"""Connection-level limits for hangard's listeners: what uvicorn 0.54 does not do itself.

* uvicorn arms its keep-alive timer only after a response, so a connection that never
  finishes its request headers stays open forever (a slowloris). :class:`GuardedH11`
  closes a connection whose request headers are not complete :data:`HEADER_TIMEOUT`
  seconds after it opened (or after the first byte of its next request).
* ``limit_concurrency`` answers 503 but still accepts and keeps connections; here each
  listener has its own cap and a connection over it is dropped at once. The unix
  socket and TCP are separate servers, so TCP clients cannot use up the local cap.
* Each connection is a file descriptor: the soft RLIMIT_NOFILE is raised to the hard
  one at start, and accept errors (EMFILE) are logged at most once per
  :data:`ACCEPT_LOG_EVERY` seconds with a count, not with a traceback each time.
"""

from __future__ import annotations

import asyncio
import asyncio.constants
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("hangard")

HEADER_TIMEOUT = 10.0
ACCEPT_LOG_EVERY = 10.0
TCP_CONNECTIONS = 256
LOCAL_CONNECTIONS = 256
# File descriptors left for VMs, sockets, logs and the database whatever TCP does.
FD_RESERVE = 512


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a per-listener connection cap
    (``config.max_connections``, set by :func:`guard`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap: int | None = getattr(self.config, "max_connections", None)
        if cap is not None and len(self.connections) >= cap:
            transport.abort()  # over the cap: not registered, nothing kept
            return
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a request: its headers have a deadline
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is not None:
            super().connection_lost(exc)


def guard(config: Any, max_connections: int) -> None:
    """Make a uvicorn config use :class:`GuardedH11` with this connection cap."""
    config.http = GuardedH11
    config.max_connections = max_connections
    config.h11_max_incomplete_event_size = 16 * 1024  # headers larger than this: 400


def bound_tls_handshakes() -> None:
    """A TCP connection that does not finish its TLS handshake in :data:`HEADER_TIMEOUT`
    seconds is closed. uvicorn passes no ``ssl_handshake_timeout`` to ``create_server``,
    so asyncio's default (60 s, read from ``asyncio.constants`` at each connection)
    applies; hangard is the only server in its process, so it lowers that default."""
    asyncio.constants.SSL_HANDSHAKE_TIMEOUT = HEADER_TIMEOUT


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def tcp_connections(fd_limit: int, wanted: int = TCP_CONNECTIONS) -> int:
    """The TCP cap: what was asked, but always leaving :data:`FD_RESERVE` descriptors and
    the local socket's share free."""
    return max(8, min(wanted, fd_limit - FD_RESERVE - LOCAL_CONNECTIONS))


class AcceptErrors:
    """An event-loop exception handler that logs accept failures rate-limited."""

    def __init__(self) -> None:
        self.last = 0.0
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" not in message:
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_LOG_EVERY:
            self.suppressed += 1
            return
        log.warning(
            "%s: %s (%d more like it not logged)",
            message,
            context.get("exception"),
            self.suppressed,
        )
        self.last, self.suppressed = now, 0
