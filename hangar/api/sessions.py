"""Open long-lived sessions (console, VNC and event websockets, followed logs), by token
and project, so that revoking a token or deleting a project ends them at once.

Authentication happens when a session opens; without this registry a session would
outlive the token that opened it for as long as the client keeps it open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from hangar.api.auth import Access

# Websocket close codes (4000 + the HTTP status, as for a refused websocket).
REVOKED = 4401
PROJECT_GONE = 4404


@dataclass(eq=False)
class Session:
    token_id: str
    project: str | None  # the project it is in; None: every project (the local root)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    code: int = 1000
    reason: str = ""

    def end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.code, self.reason = code, reason
            self.ended.set()


class Sessions:
    def __init__(self) -> None:
        self._open: set[Session] = set()

    @contextmanager
    def open(self, scope: Access) -> Iterator[Session]:
        session = Session(token_id=scope.caller.id, project=scope.filter)
        self._open.add(session)
        try:
            yield session
        finally:
            self._open.discard(session)

    def end_token(self, token_id: str) -> int:
        """End every session opened with the token; how many were open."""
        ended = [s for s in self._open if s.token_id == token_id]
        for session in ended:
            session.end(REVOKED, "the token was revoked")
        return len(ended)

    def end_project(self, project: str) -> int:
        """End every session in ``project`` (its tokens are deleted with it)."""
        ended = [s for s in self._open if s.project == project]
        for session in ended:
            session.end(PROJECT_GONE, f"project '{project}' was deleted")
        return len(ended)


def sessions_of(conn: HTTPConnection) -> Sessions:
    sessions: Sessions = conn.app.state.sessions
    return sessions
