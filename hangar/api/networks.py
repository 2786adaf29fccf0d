"""Network routes: /1.0/networks, port forwards and per-VM firewall rules.

Everything is in the caller's project (``?project=``, see :mod:`hangar.api.auth`):
another project's networks, forwards and rules answer 404. Reading needs a viewer;
forwards and firewall rules (like a VM's own port forwards) an operator; creating,
deleting and peering networks an admin of the project. Changes are audited by the
audit middleware, as every non-GET request is.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from hangar.api.auth import ADMIN, OPERATE, READ, Access
from hangar.api.deps import platform_of
from hangar.services.networks import NetworkView
from hangar.spec.network import (
    FirewallRule,
    FirewallRuleCreate,
    Forward,
    ForwardCreate,
    NetworkCreate,
)

router = APIRouter(prefix="/1.0", tags=["networks"])


@router.get("/networks")
async def list_networks(request: Request, scope: Access = READ) -> list[NetworkView]:
    return platform_of(request).networks.all(scope.project)


@router.post("/networks", status_code=201)
async def create_network(
    request: Request, body: NetworkCreate, scope: Access = ADMIN
) -> NetworkView:
    return await platform_of(request).networks.create(
        body, scope.project, tenant=not scope.caller.local
    )


@router.get("/networks/{name}")
async def get_network(request: Request, name: str, scope: Access = READ) -> NetworkView:
    return platform_of(request).networks.get(name, scope.project)


@router.delete("/networks/{name}", status_code=204)
async def delete_network(request: Request, name: str, scope: Access = ADMIN) -> Response:
    await platform_of(request).networks.delete(name, scope.project)
    return Response(status_code=204)


class Peer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str


@router.post("/networks/{name}/peers")
async def peer_networks(
    request: Request, name: str, body: Peer, scope: Access = ADMIN
) -> NetworkView:
    """Let guests of two managed networks of the project reach each other (networks are
    isolated by default)."""
    return await platform_of(request).networks.peer(name, body.network, project=scope.project)


@router.delete("/networks/{name}/peers/{other}")
async def unpeer_networks(
    request: Request, name: str, other: str, scope: Access = ADMIN
) -> NetworkView:
    return await platform_of(request).networks.peer(
        name, other, peered=False, project=scope.project
    )


@router.get("/forwards")
async def list_forwards(
    request: Request,
    network: str | None = Query(None, description="only this network's forwards"),
    scope: Access = READ,
) -> list[Forward]:
    return platform_of(request).networks.forwards(network, scope.project)


@router.post("/networks/{name}/forwards", status_code=201)
async def add_forward(
    request: Request, name: str, body: ForwardCreate, scope: Access = OPERATE
) -> Forward:
    return await platform_of(request).networks.add_forward(name, body, scope.project)


@router.delete("/forwards/{forward_id}", status_code=204)
async def delete_forward(request: Request, forward_id: int, scope: Access = OPERATE) -> Response:
    await platform_of(request).networks.delete_forward(forward_id, scope.project)
    return Response(status_code=204)


@router.get("/firewall")
async def list_rules(
    request: Request,
    vm: str | None = Query(None, description="only this VM's rules"),
    scope: Access = READ,
) -> list[FirewallRule]:
    return platform_of(request).networks.rules(vm, scope.project)


@router.post("/firewall", status_code=201)
async def add_rule(
    request: Request, body: FirewallRuleCreate, scope: Access = OPERATE
) -> FirewallRule:
    return await platform_of(request).networks.add_rule(body, scope.project)


@router.delete("/firewall/{rule_id}", status_code=204)
async def delete_rule(request: Request, rule_id: int, scope: Access = OPERATE) -> Response:
    await platform_of(request).networks.delete_rule(rule_id, scope.project)
    return Response(status_code=204)
