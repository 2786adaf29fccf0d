"""Audit events only for who may read the audit log (issue 14, item 10), through the
real CLI on a remote: a viewer's 'hangar monitor --type audit' is refused with the
server's reason and the Forbidden exit code (not a traceback), and its plain
'hangar monitor' runs without audit events."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.test_remote import new_token
from tests.support.daemon import BIN, Daemon

pytestmark = [pytest.mark.e2e]


def test_a_viewers_monitor_gets_no_audit_events(daemon: Daemon) -> None:
    token = new_token(daemon, "viewer")
    added = daemon.cli(
        "remote", "add", "audit-viewer", daemon.url, "--token", token, "--accept-certificate"
    )
    assert added.code == 0, added
    try:
        refused = daemon.cli("--remote", "audit-viewer", "monitor", "--type", "audit")
        assert refused.code == 7, refused
        assert "audit events are for project admins" in refused.stderr, refused
        assert "Traceback" not in refused.stderr
        monitor = subprocess.Popen(
            [str(BIN / "hangar"), "--remote", "audit-viewer", "monitor", "--json"],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert monitor.stdout is not None
            line = monitor.stdout.readline()
            assert '"subscribed"' in line and '"audit"' not in line, line
        finally:
            monitor.terminate()
            monitor.wait(timeout=10)
    finally:
        daemon.cli("remote", "remove", "audit-viewer")
