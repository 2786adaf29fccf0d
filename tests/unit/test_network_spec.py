"""Network specs: resolving a request against the host, allocating addresses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hangar.errors import Conflict, InvalidInput, NotFound
from hangar.spec.network import (
    NetworkConfig,
    NetworkCreate,
    allocate_ip,
    resolve_network,
    tap_name,
)
from hangar.spec.vm import NicCreate


def _resolve(
    existing: tuple[NetworkConfig, ...] = (), project: str = "default", **fields: Any
) -> NetworkConfig:
    return resolve_network(
        NetworkCreate.model_validate({"name": "lan", "type": "nat", **fields}),
        network_id="0123456789abcdef",
        project=project,
        existing=existing,
        host_subnets=["192.0.2.1/24", "10.77.0.5/24"],
        host_interfaces={"lo", "eth0", "br0"},
        host_bridges={"br0"},
    )


def test_defaults_pick_the_first_free_subnet() -> None:
    # 10.77.0.0/24 is on a host interface, so the next one is chosen.
    net = _resolve()
    assert (net.subnet, net.gateway, net.bridge) == ("10.77.1.0/24", "10.77.1.1", "hgb0123456789")
    other = _resolve(existing=(net,), name="lan2")
    assert other.subnet == "10.77.2.0/24"


@pytest.mark.parametrize(
    ("fields", "error", "text"),
    [
        ({"subnet": "10.1.2.3/24"}, InvalidInput, "not an IPv4 network"),
        ({"subnet": "nonsense"}, InvalidInput, "not an IPv4 network"),
        ({"subnet": "8.8.8.0/24"}, InvalidInput, "not a private network"),
        ({"subnet": "10.0.0.0/8"}, InvalidInput, "prefix /8"),
        ({"subnet": "192.0.2.0/25"}, Conflict, "already on a host interface"),
        ({"uplink": "eth9"}, NotFound, "'eth9' does not exist"),
        ({"type": "isolated", "uplink": "eth0"}, InvalidInput, "has no uplink"),
        ({"type": "bridged"}, InvalidInput, "needs an uplink"),
        ({"type": "bridged", "uplink": "eth0"}, NotFound, "is not a bridge"),
        (
            {"type": "bridged", "uplink": "br0", "subnet": "10.9.0.0/24"},
            InvalidInput,
            "no subnet",
        ),
        ({"name": "Bad_Name"}, InvalidInput, "not allowed"),
    ],
)
def test_bad_requests_are_refused(fields: dict[str, Any], error: type, text: str) -> None:
    with pytest.raises(error) as info:
        _resolve(**fields)
    assert text in str(info.value)


def test_overlapping_and_duplicate_networks_are_refused() -> None:
    first = _resolve(subnet="10.80.0.0/16")
    with pytest.raises(Conflict, match="overlaps network 'lan'"):
        _resolve(existing=(first,), name="lan2", subnet="10.80.5.0/24")
    with pytest.raises(Conflict, match="already exists"):
        _resolve(existing=(first,), subnet="10.81.0.0/24")


def test_names_are_per_project_subnets_per_host() -> None:
    ours = _resolve(subnet="10.77.7.0/24")
    assert ours.project == "default"
    # Another project may call its network "lan" too; it gets a subnet of its own.
    theirs = _resolve(existing=(ours,), project="team")
    assert (theirs.project, theirs.name) == ("team", "lan")
    assert theirs.subnet != ours.subnet
    with pytest.raises(Conflict) as caught:
        _resolve(existing=(ours,), project="team", name="other", subnet="10.77.7.0/25")
    # The overlapping network is another project's: its name is not told.
    assert "another project" in caught.value.message and "lan" not in caught.value.message
    with pytest.raises(Conflict) as caught:
        _resolve(existing=(ours,), name="other", subnet="10.77.7.0/25")
    assert "network 'lan' (10.77.7.0/24)" in caught.value.message


def test_bridged_network_joins_the_host_bridge() -> None:
    net = _resolve(type="bridged", uplink="br0")
    assert net.bridge == "br0" and not net.managed and net.subnet is None


def test_allocate_ip() -> None:
    net = _resolve(subnet="10.90.0.0/29")
    assert allocate_ip(net, set(), None) == "10.90.0.2"  # .1 is the gateway
    assert allocate_ip(net, {"10.90.0.2", "10.90.0.3"}, None) == "10.90.0.4"
    assert allocate_ip(net, set(), "10.90.0.6") == "10.90.0.6"
    with pytest.raises(Conflict, match="already used"):
        allocate_ip(net, {"10.90.0.6"}, "10.90.0.6")
    with pytest.raises(Conflict, match="already used"):
        allocate_ip(net, set(), "10.90.0.1")
    with pytest.raises(InvalidInput, match="not a host address"):
        allocate_ip(net, set(), "10.90.0.7")  # broadcast
    with pytest.raises(InvalidInput, match="not an IPv4 address"):
        allocate_ip(net, set(), "ten")
    full = {f"10.90.0.{i}" for i in range(2, 7)}
    with pytest.raises(Conflict, match="no free address"):
        allocate_ip(net, full, None)


def test_tap_names_fit_in_an_interface_name() -> None:
    assert len(tap_name("f" * 32, 15)) <= 15
    assert tap_name("0123456789abcdef", 0) != tap_name("0123456789abcdef", 1)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "network"},
        {"type": "network", "network": "lan", "forwards": [{"host_port": 1, "guest_port": 2}]},
        {"network": "lan"},
        {"ip": "10.0.0.2"},
    ],
)
def test_nic_fields_must_fit_the_type(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NicCreate.model_validate(fields)
