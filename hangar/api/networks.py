"""Network routes: /1.0/networks, port forwards and per-VM firewall rules."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

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
async def list_networks(request: Request) -> list[NetworkView]:
    return platform_of(request).networks.all()


@router.post("/networks", status_code=201)
async def create_network(request: Request, body: NetworkCreate) -> NetworkView:
    return await platform_of(request).networks.create(body)


@router.get("/networks/{name}")
async def get_network(request: Request, name: str) -> NetworkView:
    return platform_of(request).networks.get(name)


@router.delete("/networks/{name}", status_code=204)
async def delete_network(request: Request, name: str) -> Response:
    await platform_of(request).networks.delete(name)
    return Response(status_code=204)


class Peer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str


@router.post("/networks/{name}/peers")
async def peer_networks(request: Request, name: str, body: Peer) -> NetworkView:
    """Let guests of two managed networks reach each other (networks are isolated by default)."""
    return await platform_of(request).networks.peer(name, body.network)


@router.delete("/networks/{name}/peers/{other}")
async def unpeer_networks(request: Request, name: str, other: str) -> NetworkView:
    return await platform_of(request).networks.peer(name, other, peered=False)


@router.get("/forwards")
async def list_forwards(request: Request, network: str | None = None) -> list[Forward]:
    return platform_of(request).networks.forwards(network)


@router.post("/networks/{name}/forwards", status_code=201)
async def add_forward(request: Request, name: str, body: ForwardCreate) -> Forward:
    return await platform_of(request).networks.add_forward(name, body)


@router.delete("/forwards/{forward_id}", status_code=204)
async def delete_forward(request: Request, forward_id: int) -> Response:
    await platform_of(request).networks.delete_forward(forward_id)
    return Response(status_code=204)


@router.get("/firewall")
async def list_rules(request: Request, vm: str | None = None) -> list[FirewallRule]:
    return platform_of(request).networks.rules(vm)


@router.post("/firewall", status_code=201)
async def add_rule(request: Request, body: FirewallRuleCreate) -> FirewallRule:
    return await platform_of(request).networks.add_rule(body)


@router.delete("/firewall/{rule_id}", status_code=204)
async def delete_rule(request: Request, rule_id: int) -> Response:
    await platform_of(request).networks.delete_rule(rule_id)
    return Response(status_code=204)
