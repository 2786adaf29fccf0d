import socket

import pytest

from hangar.errors import Conflict
from hangar.services.ports import check_free
from hangar.spec.vm import PortForward


def test_free_port_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_free([PortForward(host_port=port, guest_port=80)], owners={})


def test_port_in_use_by_a_program() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(Conflict, match=f"host port {port}/tcp on 127.0.0.1 is not available"):
            check_free([PortForward(host_port=port, guest_port=80)], owners={})


def test_port_claimed_by_another_vm() -> None:
    with pytest.raises(Conflict, match="already forwarded to VM 'web'"):
        check_free([PortForward(host_port=8080, guest_port=80)], owners={("tcp", 8080): "web"})
