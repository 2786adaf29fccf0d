"""API tokens: created with a random secret shown once; only its hash is kept."""

from __future__ import annotations

import secrets
import time
import uuid

from pydantic import BaseModel

from hangar.errors import InvalidInput
from hangar.state.db import Database
from hangar.state.tokens import TokenRecord, TokenRepository

ROLES = ("viewer", "operator", "admin")
# A prefix makes leaked tokens easy to recognise (and to scan for).
PREFIX = "hgr_"
# last_used_at is written at most this often per token: not a database write per request.
TOUCH_EVERY = 60.0


class TokenView(BaseModel):
    id: str
    project: str
    name: str
    role: str
    created_at: str
    last_used_at: str | None


class NewToken(TokenView):
    secret: str


def _view(record: TokenRecord) -> TokenView:
    return TokenView(
        id=record.id,
        project=record.project,
        name=record.name,
        role=record.role,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
    )


class TokenService:
    def __init__(self, db: Database):
        self.repo = TokenRepository(db)
        self._touched: dict[str, float] = {}

    def create(self, project: str, role: str, name: str = "") -> NewToken:
        if role not in ROLES:
            raise InvalidInput(f"unknown role '{role}'", hint=f"roles: {', '.join(ROLES)}")
        token_id = uuid.uuid4().hex[:16]
        secret = PREFIX + secrets.token_urlsafe(32)
        record = self.repo.insert(token_id, project, name or f"token-{token_id[:6]}", role, secret)
        return NewToken(**_view(record).model_dump(), secret=secret)

    def list(self, project: str | None = None) -> list[TokenView]:
        return [_view(r) for r in self.repo.list(project)]

    def get(self, token_id: str, project: str | None = None) -> TokenView:
        return _view(self.repo.get(token_id, project))

    def revoke(self, token_id: str, project: str | None = None) -> None:
        self.repo.get(token_id, project)
        self.repo.delete(token_id)

    def authenticate(self, secret: str) -> TokenRecord | None:
        """The token with this secret (compared in constant time), or None."""
        record = self.repo.authenticate(secret)
        if record is not None:
            now = time.monotonic()
            if now - self._touched.get(record.id, -TOUCH_EVERY) >= TOUCH_EVERY:
                self._touched[record.id] = now
                self.repo.touch(record.id)
        return record
