"""Snapshots, warm templates and forks through the CLI, against a real hangard."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.daemon import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]


def test_snapshot_commands_and_a_warm_launch(daemon: Daemon) -> None:
    vm, tpl = "cli-snap", "cli-warm"
    made = [vm, "cli-w1"]
    try:
        assert daemon.cli("launch", "tiny", vm, "--memory", "128M", "--wait").code == 0
        created = daemon.cli("snapshot", "create", vm, "one", "--memory")
        assert created.code == 0 and "disk, memory and devices" in created.stdout, created
        assert daemon.cli("snapshot", "create", vm, "two").code == 0
        tree = daemon.cli("snapshot", "list", vm)
        assert tree.code == 0 and re.search(r"└ two \*", tree.stdout), tree
        listed = json.loads(daemon.cli("snapshot", "list", vm, "--format", "json").stdout)
        assert [(s["name"], s["parent"], s["memory"]) for s in listed] == [
            ("one", None, True),
            ("two", "one", False),
        ]

        refused = daemon.cli("snapshot", "restore", vm, "one")
        assert refused.code == 4 and "--force" in refused.stderr, refused
        # The neutral hint, then the CLI's own command lines for the suggested action.
        assert "force the restore" in refused.stderr, refused
        assert f"try: hangar snapshot restore {vm} one --force" in refused.stderr, refused
        assert f"hangar snapshot create {vm} NAME --memory" in refused.stderr, refused
        restored = daemon.cli("snapshot", "restore", vm, "one", "--force")
        assert restored.code == 0 and "restored to one (running)" in restored.stdout, restored

        started = daemon.cli("snapshot", "delete", vm, "two", "--no-wait")
        assert started.code == 0 and "operation" in started.stdout
        op_id = started.stdout.split()[1]
        assert daemon.cli("operation", "wait", op_id).code == 0
        after = json.loads(daemon.cli("snapshot", "list", vm, "--format", "json").stdout)
        assert [s["name"] for s in after] == ["one"]
        missing = daemon.cli("snapshot", "delete", vm, "nope")
        assert missing.code == 3 and "no snapshot named 'nope'" in missing.stderr

        published = daemon.cli("publish", vm, tpl, "--warm")
        assert published.code == 0 and "warm template" in published.stdout, published
        warm = daemon.cli("launch", tpl, "cli-w1", "--wait", "60")
        assert warm.code == 0 and "running" in warm.stdout, warm
        info = json.loads(daemon.cli("info", "cli-w1", "--format", "json").stdout)
        assert info["image"] == tpl and info["state"] == "running"
    finally:
        for name in made:
            daemon.cli("delete", name, "--force")
        daemon.cli("image", "delete", tpl)
