"""Client calls for virtual networks: networks, NICs, peering, forwards, firewall rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from hangar.client.transport import Transport


class NetworkApi(Transport):
    """Mixed into :class:`hangar.client.client.Client`, which provides the transport.
    Every call acts in the client's project (``?project=``)."""

    def networks(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/networks"))

    def network(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", f"/1.0/networks/{name}"))

    def create_network(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", "/1.0/networks", json=dict(spec)))

    def delete_network(self, name: str) -> None:
        self.request("DELETE", f"/1.0/networks/{name}")

    def attach_nic(self, vm: str, network: str, ip: str | None = None) -> dict[str, Any]:
        body = {"network": network, "ip": ip}
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{vm}/nics", json=body))

    def detach_nic(self, vm: str, network: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("DELETE", f"/1.0/vms/{vm}/nics/{network}"))

    def peer_networks(self, name: str, other: str, *, peered: bool = True) -> dict[str, Any]:
        if peered:
            return cast(
                dict[str, Any],
                self.request("POST", f"/1.0/networks/{name}/peers", json={"network": other}),
            )
        return cast(dict[str, Any], self.request("DELETE", f"/1.0/networks/{name}/peers/{other}"))

    def forwards(self, network: str | None = None) -> list[dict[str, Any]]:
        params = {"network": network} if network else None
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/forwards", params=params))

    def add_forward(self, network: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request("POST", f"/1.0/networks/{network}/forwards", json=dict(spec)),
        )

    def delete_forward(self, forward_id: int) -> None:
        self.request("DELETE", f"/1.0/forwards/{forward_id}")

    def firewall_rules(self, vm: str | None = None) -> list[dict[str, Any]]:
        params = {"vm": vm} if vm else None
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/firewall", params=params))

    def add_firewall_rule(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", "/1.0/firewall", json=dict(spec)))

    def delete_firewall_rule(self, rule_id: int) -> None:
        self.request("DELETE", f"/1.0/firewall/{rule_id}")
