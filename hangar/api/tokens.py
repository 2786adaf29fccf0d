"""Token routes: create (the secret is in this one answer only), list, revoke."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hangar.api.auth import ADMIN, Access
from hangar.api.deps import platform_of
from hangar.api.sessions import sessions_of
from hangar.services.tokens import NewToken, TokenView

router = APIRouter(prefix="/1.0/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "operator", "admin"]
    name: str = Field(default="", max_length=64)


@router.post("", status_code=201)
async def create_token(request: Request, body: TokenCreate, scope: Access = ADMIN) -> NewToken:
    """Create a token in ``?project=``. The answer holds the secret; hangard keeps a hash."""
    return platform_of(request).tokens.create(scope.project, body.role, body.name)


@router.get("")
async def list_tokens(request: Request, scope: Access = ADMIN) -> list[TokenView]:
    return platform_of(request).tokens.list(scope.filter)


@router.delete("/{token_id}", status_code=204)
async def revoke_token(request: Request, token_id: str, scope: Access = ADMIN) -> Response:
    platform_of(request).tokens.revoke(token_id, scope.filter)
    sessions_of(request).end_token(token_id)  # its open websockets and followed logs
    return Response(status_code=204)
