"""Long conversions report live progress through their operation, and cancel cleanly.

Real qemu-img through a real hangard: a 384 MiB raw disk full of data is imported
while an events subscriber records every progress update.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hangar.client.client import Client
from tests.support.daemon import Daemon

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("conv") / "data.raw"
    # Incompressible data, so the conversion writes every block and takes a while.
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={path}", "bs=1M", "count=384", "status=none"], check=True
    )
    yield path
    path.unlink(missing_ok=True)


def follow(client: Client, start: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start an operation with ``start(client)`` while listening; return it and its updates."""
    with client.events("operation") as events:
        assert next(events)["type"] == "subscribed"
        op = start(client)
        updates = []
        for event in events:
            data = event.get("data", {})
            if data.get("id") != op["id"]:
                continue
            updates.append(data)
            if data["status"] != "running":
                return data, updates
    raise AssertionError("the event stream ended")


def test_import_reports_progress_as_qemu_img_converts(daemon: Daemon, big_raw: Path) -> None:
    with daemon.client() as client:
        final, updates = follow(
            client, lambda c: c.start_import(big_raw, name="conv-progress", fmt="raw")
        )
        try:
            assert final["status"] == "success", final
            percents = [u["progress_percent"] for u in updates if u["progress_percent"]]
            between = [p for p in percents if 10 < p < 99]
            assert len(between) >= 3, percents
            assert percents == sorted(percents)
            assert any("converting" in u["progress_message"] for u in updates)
        finally:
            client.delete_image("conv-progress")


def test_a_cancelled_import_stops_qemu_img_and_leaves_nothing(
    daemon: Daemon, big_raw: Path
) -> None:
    images = daemon.home / "lib" / "images"
    with daemon.client() as client, client.events("operation") as events:
        assert next(events)["type"] == "subscribed"
        op = client.start_import(big_raw, name="conv-cancel", fmt="raw")
        for event in events:
            data = event.get("data", {})
            if data.get("id") == op["id"] and (data.get("progress_percent") or 0) > 12:
                break
        client.cancel_operation(op["id"])
        final = client.operation(op["id"], wait=30)
    assert final["status"] == "cancelled", final
    assert "conv-cancel" not in [i["name"] for i in daemon.client().images()]
    leftovers = [p.name for p in images.iterdir() if "conv-cancel" in p.name]
    assert leftovers == []
    running = subprocess.run(["pgrep", "-f", f"qemu-img convert.*{big_raw}"], check=False)
    assert running.returncode == 1, "qemu-img still runs after the cancel"
