from hangar.services.lifecycle import PowerState
from hangar.services.qemu.process import ExitStatus
from hangar.services.supervisor import exit_outcome

SERIAL = ["Kernel panic - not syncing", "---[ end ]---"]


def test_exit_status_parse() -> None:
    assert ExitStatus.parse("0\n") == ExitStatus(code=0, signal=None)
    killed = ExitStatus.parse("137")
    assert killed.signal == 9 and not killed.clean
    assert "signal 9 (SIGKILL)" in killed.describe()
    assert ExitStatus.parse("1").describe() == "QEMU exited with status 1"


def test_requested_stop_is_stopped_with_hangards_reason() -> None:
    out = exit_outcome(ExitStatus(0, None), {"reason": "host-qmp-quit"}, "force-stopped", [], 9)
    assert out.state is PowerState.STOPPED and out.reason == "force-stopped"


def test_guest_poweroff() -> None:
    out = exit_outcome(
        ExitStatus(0, None), {"guest": True, "reason": "guest-shutdown"}, None, [], 9
    )
    assert out.state is PowerState.STOPPED and "powered off" in out.reason and not out.reboot


def test_guest_reboot_restarts_unless_boot_looping() -> None:
    shutdown = {"guest": True, "reason": "guest-reset"}
    assert exit_outcome(ExitStatus(0, None), shutdown, None, [], 60).reboot
    looping = exit_outcome(ExitStatus(0, None), shutdown, None, SERIAL, 1.2)
    assert looping.state is PowerState.CRASHED and not looping.reboot
    assert "Kernel panic" in looping.reason


def test_kill_is_a_crash_with_serial_tail() -> None:
    out = exit_outcome(ExitStatus(None, 9), None, None, SERIAL, 30)
    assert out.state is PowerState.CRASHED
    assert "killed by signal 9" in out.reason and "end ]---" in out.reason


def test_unknown_exit_is_a_crash() -> None:
    out = exit_outcome(None, None, None, [], 30)
    assert out.state is PowerState.CRASHED and "unknown" in out.reason


def test_qemu_error_exit_is_a_crash_even_when_stopping() -> None:
    out = exit_outcome(ExitStatus(1, None), None, "stopped", [], 30)
    assert out.state is PowerState.CRASHED and "status 1" in out.reason
