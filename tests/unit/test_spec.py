import pytest
from pydantic import ValidationError

from hangar.errors import InvalidInput
from hangar.names import check_name
from hangar.spec.units import format_size, parse_size
from hangar.spec.vm import PortForward, VMCreate, vm_uuid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256M", 256 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        ("512MiB", 512 * 1024**2),
        ("100", 100),
        ("4k", 4096),
        ("1 GB", 1024**3),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12Q", "-1G", "1..2G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not a size"):
        parse_size(text)


def test_format_size_round_trips() -> None:
    for size in (256 * 1024**2, 2 * 1024**3, 4096):
        assert parse_size(format_size(size)) == size
    assert format_size(1536 * 1024**2) == "1536M"
    assert format_size(24684096 * 1024) == "23.5G"
    assert format_size(100) == "100B"


@pytest.mark.parametrize("name", ["web", "vm1", "a", "my-vm-2", "x" * 63])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("x" * 64, "64 characters"),
        ("-web", "not allowed"),
        ("Web", "not allowed"),
        ("web_1", "not allowed"),
        ("web-", "not allowed"),
    ],
)
def test_bad_names(name: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as info:
        check_name(name)
    assert "lowercase" in info.value.hint


def test_vmcreate_is_strict_and_immutable() -> None:
    with pytest.raises(ValidationError, match="extra"):
        VMCreate.model_validate({"name": "a", "image": "tiny", "colour": "red"})
    spec = VMCreate(name="a", image="tiny", memory="256M")  # type: ignore[arg-type]
    assert spec.memory == 256 * 1024**2
    with pytest.raises(ValidationError):
        spec.name = "b"  # type: ignore[misc]


def test_vmcreate_bad_size_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="is not a size"):
        VMCreate.model_validate({"name": "a", "image": "tiny", "memory": "lots"})


def test_port_forward_parse() -> None:
    assert PortForward.parse("8080:80") == PortForward(host_port=8080, guest_port=80)
    udp = PortForward.parse("5353:53/udp")
    assert (udp.protocol, udp.host_port, udp.guest_port) == ("udp", 5353, 53)
    bound = PortForward.parse("0.0.0.0:2222:22")
    assert bound.host_address == "0.0.0.0"


@pytest.mark.parametrize("text", ["80", "a:b", "8080:80/sctp", "70000:80", "1:2:3:4"])
def test_port_forward_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        PortForward.parse(text)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1,guestfwd=tcp:10.0.2.9:1-cmd:sh", "localhost", "::1", "127.0.0.1 ", "1.2.3"],
)
def test_forward_host_address_must_be_an_ipv4_literal(address: str) -> None:
    # The address is spliced into -netdev user,hostfwd=... and HMP hostfwd_add.
    with pytest.raises(ValueError, match="not an IPv4 address"):
        PortForward(host_port=8080, guest_port=80, host_address=address)
    forward = {"host_port": 8080, "guest_port": 80, "host_address": address}
    body = {"name": "a", "image": "tiny", "nics": [{"forwards": [forward]}]}
    with pytest.raises(ValueError, match="not an IPv4 address"):
        VMCreate.model_validate(body)


def test_forward_parse_names_a_bad_host_address() -> None:
    with pytest.raises(InvalidInput, match="names no IPv4 host address"):
        PortForward.parse("evil,guestfwd=x:8080:80")


def test_vm_uuid_is_canonical() -> None:
    assert vm_uuid("0123456789abcdef0123456789abcdef") == "01234567-89ab-cdef-0123-456789abcdef"
