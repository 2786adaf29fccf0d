"""Who is asking, and may they? Authentication (local socket or bearer token) and roles.

* A request on the unix socket is the host administrator: every project, every action.
  The socket's listener marks its requests with :func:`mark_local`; nothing a remote
  client sends can set that mark.
* A request over TCP must carry ``Authorization: Bearer <token>``. A token belongs to
  one project and has one role: viewer (read), operator (read + lifecycle and
  consoles), admin (everything in its project, tokens and quotas included).
* Another project's resources answer 404, exactly as missing ones do, so a token
  cannot learn which names exist elsewhere. 403 only says "your role is too low"
  about the token's own project.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from fastapi import Depends, Query, Request
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from hangar.api.deps import platform_of
from hangar.errors import Forbidden, NextStep, NotFound, Unauthenticated
from hangar.names import DEFAULT_PROJECT

LOCAL_MARK = "hangar.local"
ROOT_ID = "local"
ROOT_NAME = "local root"


class Level(IntEnum):
    READ = 1
    OPERATE = 2
    ADMIN = 3
    HOST = 4  # the host administrator only (unix socket)


ROLE_LEVEL = {"viewer": Level.READ, "operator": Level.OPERATE, "admin": Level.ADMIN}
ROLES = tuple(ROLE_LEVEL)


class LocalListener:
    """ASGI wrapper for the unix socket listener: its requests are the host administrator."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = mark_local(scope)
        await self.app(scope, receive, send)


def mark_local(scope: Scope) -> Scope:
    return {**scope, LOCAL_MARK: True}


@dataclass(frozen=True)
class Caller:
    id: str
    name: str
    role: str
    project: str | None  # None: the host administrator, all projects

    @property
    def local(self) -> bool:
        return self.project is None

    @property
    def level(self) -> Level:
        return Level.HOST if self.local else ROLE_LEVEL[self.role]


ROOT = Caller(id=ROOT_ID, name=ROOT_NAME, role="admin", project=None)


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(conn: HTTPConnection) -> Caller:
    """The caller of a request or websocket; raises :class:`Unauthenticated`."""
    if conn.scope.get(LOCAL_MARK):
        caller = ROOT
    else:
        secret = bearer(conn)
        if secret is None:
            raise Unauthenticated(
                "this request needs a token",
                hint="send 'Authorization: Bearer <token>'; a project admin creates tokens",
                action=NextStep.CREATE_TOKEN,
            )
        token = platform_of(conn).tokens.authenticate(secret)
        if token is None:
            raise Unauthenticated(
                "the token is not valid (unknown or revoked)",
                hint="ask a project admin for a new token",
                action=NextStep.CREATE_TOKEN,
            )
        caller = Caller(id=token.id, name=token.name, role=token.role, project=token.project)
    conn.scope.setdefault("state", {})["caller"] = caller
    return caller


def authorize(conn: HTTPConnection, caller: Caller, project: str, level: Level) -> None:
    """Allow ``caller`` to act at ``level`` in ``project`` or raise 404 (not theirs) / 403."""
    conn.scope.setdefault("state", {})["project"] = project
    if caller.local:
        platform_of(conn).projects.repo.get(project)  # 404 if it does not exist
        return
    if caller.project != project:
        raise NotFound(
            f"no project named '{project}'",
            hint="list the projects to see which there are",
            action=NextStep.LIST_PROJECTS,
        )
    if caller.level < level:
        raise Forbidden(
            f"the role '{caller.role}' of token '{caller.name}' may not do this "
            f"in project '{project}'",
            hint=f"it needs a token with role {_role_for(level)}",
        )


def _role_for(level: Level) -> str:
    if level is Level.HOST:
        return "of the host administrator (the local socket)"
    names = [role for role, lvl in ROLE_LEVEL.items() if lvl >= level]
    return " or ".join(names)


@dataclass(frozen=True)
class Access:
    caller: Caller
    project: str
    explicit: bool  # the client named the project

    @property
    def filter(self) -> str | None:
        """Project to filter listings by; None (everything) for the host admin by default."""
        return self.project if (self.explicit or not self.caller.local) else None


PROJECT_QUERY = Query(
    None,
    pattern=r"^[a-z][a-z0-9-]{0,62}$",
    description="project to act in; default: the token's project, or 'default' locally",
)


def access(level: Level) -> Any:
    """A dependency: authenticate, pick the project (``?project=``), check the role."""

    def dependency(request: Request, project: str | None = PROJECT_QUERY) -> Access:
        caller = authenticate(request)
        chosen = project or caller.project or DEFAULT_PROJECT
        if level is Level.HOST and not caller.local:
            authorize(request, caller, chosen, Level.ADMIN)  # 404 for a foreign project
            raise Forbidden(
                "only the host administrator may do this",
                hint="run it on the host, as root, through the local socket",
            )
        authorize(request, caller, chosen, level)
        return Access(caller, chosen, project is not None)

    return dependency


def authorize_ws(conn: HTTPConnection, project: str | None, level: Level) -> Access:
    caller = authenticate(conn)
    chosen = project or caller.project or DEFAULT_PROJECT
    authorize(conn, caller, chosen, level)
    return Access(caller, chosen, project is not None)


# Dependency singletons for route signatures.
READ = Depends(access(Level.READ))
OPERATE = Depends(access(Level.OPERATE))
ADMIN = Depends(access(Level.ADMIN))
HOST = Depends(access(Level.HOST))
