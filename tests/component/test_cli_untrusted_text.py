"""The CLI prints others' text literally (issue 14, item 7): a guest's serial line as a
VM's state reason, an agent's hostname and OS, an audit entry's path, a project's
description, an error message, each holding Rich markup and a terminal escape sequence,
reach a (forced) terminal as visible text, never as a hyperlink, hidden text or a new
window title. The CLI runs through click's CliRunner against a fake client that answers
what a hostile guest or user could have put into hangard."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from hangar.cli import app, monitor, operations, projects, vms
from hangar.cli.main import cli
from hangar.client.client import ApiError

EVIL = "[link=http://x]a[/link]\x1b]0;title\x07"
LITERAL = "[link=http://x]a[/link]\\x1b]0;title\\x07"
# Rich's own CSI sequences: bold and colours, and the progress bar's cursor moves. The
# hostile text's sequence is an OSC (ESC ]), which this never removes.
SGR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _vm(**changes: Any) -> dict[str, Any]:
    vm: dict[str, Any] = {
        "name": "web",
        "project": "default",
        "id": "0123456789abcdef",
        "state": "error",
        "state_reason": f"guest said: {EVIL}",
        "image": "tiny",
        "cpus": 1,
        "memory": 256 * 1024**2,
        "disk_size": 1024**3,
        "machine": "microvm",
        "accelerator": "tcg",
        "firmware": None,
        "iso": None,
        "user": None,
        "pid": None,
        "macs": ["52:54:00:00:00:01"],
        "addresses": [],
        "forwards": [],
        "serial_log": f"/var/lib/hangar/vms/{EVIL}/serial.log",
        "created_at": "2026-12-04T00:00:00Z",
        "agent": True,
        "boot_marker": "HANGAR-BOOT-COMPLETE",
    }
    return {**vm, **changes}


class FakeClient:
    """What a hangard holding hostile text answers."""

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def vm(self, name: str) -> dict[str, Any]:
        return _vm(state="running")

    def vms(self, *, all_projects: bool = False) -> list[dict[str, Any]]:
        return [_vm(image=f"img{EVIL}")]

    def guest_info(self, name: str) -> dict[str, Any]:
        return {
            "agent": True,
            "os": f"Linux{EVIL}",
            "kernel": f"6.1{EVIL}",
            "hostname": f"host{EVIL}",
            "addresses": [{"address": f"10.0.0.2{EVIL}", "prefix": 24}],
        }

    def audit(self, *, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {
                "at": "2026-12-04T00:00:00Z",
                "project": "default",
                "actor_name": f"tok{EVIL}",
                "actor_id": "t1",
                "action": "create_vm",
                "resource": f"/1.0/vms/{EVIL}",
                "result": "error",
                "status": 404,
                "message": f"most from: {EVIL}",
            }
        ]

    def projects(self) -> list[dict[str, Any]]:
        quotas = {"max_instances": None, "max_cpus": None, "max_memory": None, "max_disk": None}
        usage = {"instances": 0, "cpus": 0, "memory": 0, "disk": 0}
        return [{"name": "pa", "description": EVIL, "quotas": quotas, "usage": usage}]

    def operations(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "op1",
                "project": "default",
                "type": "import",
                "status": "running",
                "progress_percent": None,
                "description": f"import {EVIL}",
                "created_at": "2026-12-04T00:00:00Z",
            }
        ]

    def operation(self, op_id: str, wait: float | None = None) -> dict[str, Any]:
        return {**self.operations()[0], "id": op_id}

    def wait_operation(
        self, op_id: str, *, timeout: float, on_progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        on_progress({"progress_percent": 50.0, "progress_bytes": 1, "progress_message": EVIL})
        return {**self.operation(op_id), "status": "success"}

    @contextmanager
    def events(self, types: str | None = None) -> Iterator[Iterator[dict[str, Any]]]:
        at = "2026-12-04T00:00:00Z"
        yield iter(
            [
                {"type": "subscribed", "at": at, "project": "default", "data": {}},
                {
                    "type": "lifecycle",
                    "at": at,
                    "project": "default",
                    "data": {
                        "vm": "web",
                        "previous": "running",
                        "state": "error",
                        "reason": f"serial: {EVIL}",
                    },
                },
                {
                    "type": "audit",
                    "at": at,
                    "project": "default",
                    "data": {
                        "actor_name": "local root",
                        "actor_id": "local",
                        "action": "delete_vm",
                        "resource": f"/1.0/vms/{EVIL}",
                        "message": f"most from: {EVIL}",
                        "result": "error",
                        "status": 404,
                    },
                },
                {
                    "type": "operation",
                    "at": at,
                    "project": "default",
                    "data": {
                        "id": "op1",
                        "description": f"import {EVIL}",
                        "status": "running",
                        "progress_percent": 50.0,
                        "progress_message": EVIL,
                    },
                },
            ]
        )


class Terminal:
    """Rich consoles that believe they write to a colour terminal, as an admin's would."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.console = Console(
            file=self.buffer, force_terminal=True, color_system="truecolor", emoji=False,
            width=400,
        )  # fmt: skip

    def text(self) -> str:
        return self.buffer.getvalue()


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    term = Terminal()
    for module in (app, vms, monitor, projects, operations):
        monkeypatch.setattr(module, "out", term.console)
        monkeypatch.setattr(module, "err", term.console, raising=False)
        monkeypatch.setattr(module, "connect", FakeClient, raising=False)
    return term


def run(terminal: Terminal, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    printed = terminal.text() + result.output
    assert result.exit_code == 0, printed
    return printed


def assert_literal(printed: str, count: int) -> None:
    plain = SGR.sub("", printed)
    # Nothing but Rich's own styling reached the terminal: no OSC (hyperlink, title),
    # no BEL, no hidden-text or cursor sequences ...
    assert "\x1b" not in plain and "\x07" not in plain, repr(printed)
    # ... and every hostile value shows, whole and readable.
    assert plain.count(LITERAL) >= count, plain


def test_info_shows_the_state_reason_and_the_agents_answers_literally(terminal: Terminal) -> None:
    # state reason, serial log path, OS, kernel, hostname, addresses
    assert_literal(run(terminal, "info", "web"), 6)


def test_list_shows_table_cells_literally(terminal: Terminal) -> None:
    assert_literal(run(terminal, "list"), 1)


def test_audit_shows_actor_and_path_literally(terminal: Terminal) -> None:
    assert_literal(run(terminal, "audit"), 3)  # actor, path, message


def test_monitor_shows_reasons_paths_and_progress_literally(terminal: Terminal) -> None:
    printed = run(terminal, "monitor")
    assert_literal(printed, 5)
    # The project stays in its brackets (it used to be printed with markup off for that).
    assert "[default] lifecycle" in SGR.sub("", printed)


def test_project_list_and_operation_list_show_descriptions_literally(
    terminal: Terminal,
) -> None:
    assert_literal(run(terminal, "project", "list"), 1)
    assert_literal(run(terminal, "operation", "list"), 2)


def test_the_progress_bar_shows_description_and_message_literally(terminal: Terminal) -> None:
    # The bar is transient: what it drew is in the terminal's stream all the same.
    assert_literal(run(terminal, "operation", "wait", "op1"), 2)


def test_an_error_message_is_shown_literally(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: FakeClient, name: str) -> dict[str, Any]:
        raise ApiError(
            404, {"error": "not-found", "message": f"no VM {EVIL}", "hint": f"try {EVIL}"}
        )

    monkeypatch.setattr(FakeClient, "vm", refuse)
    result = CliRunner().invoke(cli, ["info", "x"], catch_exceptions=False)
    assert result.exit_code == 3
    assert_literal(terminal.text(), 2)


def test_a_suggested_command_shows_the_name_literally(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hint is neutral; the CLI words the error's next step as a command line, and
    # the VM's name in it (here hostile) is quoted and shown, never obeyed.
    def refuse(self: FakeClient, name: str) -> dict[str, Any]:
        raise ApiError(
            409,
            {
                "error": "conflict",
                "message": "it runs",
                "hint": "stop the VM first",
                "action": "stop-vm",
                "details": {"vm": EVIL},
            },
        )

    monkeypatch.setattr(FakeClient, "vm", refuse)
    result = CliRunner().invoke(cli, ["info", "x"], catch_exceptions=False)
    assert result.exit_code == 4
    plain = SGR.sub("", terminal.text())
    assert "hint: stop the VM first" in plain
    assert f"try: hangar stop '{LITERAL}'" in plain, plain
    assert_literal(terminal.text(), 1)


def test_a_forced_retry_repeats_the_command_the_user_ran(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: FakeClient, name: str) -> dict[str, Any]:
        raise ApiError(409, {"error": "conflict", "message": "m", "hint": "h", "action": "force"})

    monkeypatch.setattr(FakeClient, "vm", refuse)
    result = CliRunner().invoke(cli, ["--project", "p 1", "info", "x"], catch_exceptions=False)
    assert result.exit_code == 4
    assert "try: hangar --project 'p 1' info x --force" in SGR.sub("", terminal.text())


def test_an_unknown_next_step_shows_the_hint_alone(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: FakeClient, name: str) -> dict[str, Any]:
        raise ApiError(409, {"error": "conflict", "message": "m", "hint": "h", "action": "new"})

    monkeypatch.setattr(FakeClient, "vm", refuse)
    result = CliRunner().invoke(cli, ["info", "x"], catch_exceptions=False)
    assert result.exit_code == 4
    assert SGR.sub("", terminal.text()).splitlines() == ["error: m", "hint: h"]
