"""The platform commands as a person types them: projects and quotas, tokens,
monitor, audit, operations, against the session's real hangard."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.support.daemon import BIN, Daemon

pytestmark = [pytest.mark.e2e]


def test_projects_quotas_tokens_and_audit(daemon: Daemon) -> None:
    made = daemon.cli("project", "create", "cli-proj", "max-instances=0", "max-memory=1G")
    assert made.code == 0, made
    shown = json.loads(daemon.cli("project", "show", "cli-proj", "--format", "json").stdout)
    assert shown["quotas"]["max_instances"] == 0 and shown["quotas"]["max_memory"] == 1024**3

    over = daemon.cli("--project", "cli-proj", "launch", "tiny", "nope", "--no-start")
    assert over.code == 5, over
    assert "instances quota: limit 0, in use 0" in over.stderr and "project set" in over.stderr
    assert "hangar project set cli-proj max-instances=..." in over.stderr, over

    bad = daemon.cli("project", "set", "cli-proj", "max-ram=1G")
    assert bad.code == 2 and "max-instances" in bad.stderr
    raised = daemon.cli("project", "set", "cli-proj", "max-instances=none")
    assert raised.code == 0 and "instances" in raised.stdout

    token = daemon.cli(
        "token", "create", "--project", "cli-proj", "--role", "viewer", "--name", "bot"
    )
    assert token.code == 0 and token.stdout.startswith("hgr_") and "shown only now" in token.stderr
    listed = json.loads(
        daemon.cli("--project", "cli-proj", "token", "list", "--format", "json").stdout
    )
    (row,) = [t for t in listed if t["name"] == "bot"]
    assert token.stdout.strip() not in json.dumps(listed)
    assert daemon.cli("token", "revoke", row["id"]).code == 0

    audit = json.loads(daemon.cli("--project", "cli-proj", "audit", "--format", "json").stdout)
    actions = [(e["action"], e["result"]) for e in audit]
    assert ("create_vm", "error") in actions and ("set_quotas", "success") in actions
    assert all(e["actor_name"] == "local root" for e in audit)

    assert daemon.cli("project", "delete", "cli-proj").code == 0
    assert daemon.cli("project", "show", "cli-proj").code == 3


def test_monitor_prints_events_live(daemon: Daemon) -> None:
    monitor = subprocess.Popen(
        [str(BIN / "hangar"), "monitor", "--json"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert monitor.stdout is not None
        assert json.loads(monitor.stdout.readline())["type"] == "subscribed"
        assert daemon.cli("project", "create", "watched").code == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            event = json.loads(monitor.stdout.readline())
            if event["type"] == "audit" and event["data"]["action"] == "create_project":
                assert event["data"]["result"] == "success"
                break
        else:
            raise AssertionError("no audit event for the new project")
    finally:
        monitor.terminate()
        monitor.wait(timeout=10)
        daemon.cli("project", "delete", "watched")


def test_image_build_waits_or_returns_an_operation(daemon: Daemon) -> None:
    started = daemon.cli("image", "build", "tiny", "--no-wait", "--format", "json")
    assert started.code == 0, started
    op = json.loads(started.stdout)
    waited = daemon.cli("operation", "wait", op["id"])
    assert waited.code == 0 and "success" in waited.stdout, waited
    shown = json.loads(daemon.cli("operation", "show", op["id"]).stdout)
    assert shown["result"]["built"] is False  # up to date: the recipe did not change
    ops = daemon.cli("operation", "list")
    assert op["id"] in ops.stdout
