"""Image import, export, copy and templates through the CLI, against a real hangard."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]


def test_export_import_round_trip_and_refusals(daemon: Daemon, tmp_path: Path) -> None:
    vmdk = tmp_path / "tiny.vmdk"
    exported = daemon.cli("image", "export", "tiny", str(vmdk), "--format", "vmdk")
    assert exported.code == 0, exported
    assert "image tiny exported" in exported.stdout and vmdk.read_bytes()[:4] == b"KDMV"
    again = daemon.cli("image", "export", "tiny", str(vmdk), "--format", "vmdk")
    assert again.code == 4 and "already exists" in again.stderr

    imported = daemon.cli("image", "import", str(vmdk), "--name", "cli-rt")
    assert imported.code == 0, imported
    words = " ".join(imported.stdout.split())  # rich wraps long lines
    assert "converting" in words and "boots with the kernel of image 'tiny'" in words
    listed = json.loads(daemon.cli("image", "list", "--format", "json").stdout)
    assert "cli-rt" in [i["name"] for i in listed]
    back = tmp_path / "back.qcow2"
    assert daemon.cli("image", "export", "cli-rt", str(back), "--format", "qcow2").code == 0
    tiny_disk = next((daemon.home / "lib" / "images" / "tiny").glob("disk-*.qcow2"))
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", str(tiny_disk), str(back)],
        capture_output=True,
    )
    assert same.returncode == 0, same.stdout
    assert daemon.cli("image", "delete", "cli-rt").code == 0

    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"host file")
    backed = tmp_path / "backed.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(decoy), "-F", "raw", str(backed)],
        check=True,
    )
    before = sorted(os.listdir(daemon.home / "lib" / "images"))
    refused = daemon.cli("image", "import", str(backed))
    assert refused.code == 2, refused
    assert "refusing" in refused.stderr and "backing file" in refused.stderr
    assert "hint:" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(os.listdir(daemon.home / "lib" / "images")) == before
    assert decoy.read_bytes() == b"host file"


def test_copy_publish_and_launch_count_through_the_cli(daemon: Daemon) -> None:
    made = ["cli-base", "cli-copy", "cli-many-1", "cli-many-2"]
    try:
        assert daemon.cli("launch", "tiny", "cli-base", "--memory", "128M", "--no-start").code == 0
        copied = daemon.cli("copy", "cli-base", "cli-copy")
        assert copied.code == 0 and "linked copy of cli-base" in copied.stdout, copied
        published = daemon.cli("publish", "cli-base", "cli-tmpl")
        assert published.code == 0 and "template cli-tmpl" in published.stdout, published
        many = daemon.cli("launch", "cli-tmpl", "cli-many", "--count", "2", "--no-start")
        assert many.code == 0, many
        assert "cli-many-1" in many.stdout and "cli-many-2" in many.stdout
        in_use = daemon.cli("image", "delete", "cli-tmpl")
        assert in_use.code == 4 and "in use by 2 VM(s)" in in_use.stderr, in_use
    finally:
        for name in made:
            daemon.cli("delete", name, "--force")
    assert daemon.cli("image", "delete", "cli-tmpl").code == 0


def test_pools_volumes_and_resize_through_the_cli(daemon: Daemon, tmp_path: Path) -> None:
    pool_dir = tmp_path / "pool"
    vol_dir = pool_dir / "default"  # volumes of project default
    made = daemon.cli("storage", "pool", "create", "cli-pool", str(pool_dir))
    assert made.code == 0 and pool_dir.is_dir(), made
    pools = daemon.cli("storage", "pool", "list")
    assert "cli-pool" in pools.stdout and "FREE" in pools.stdout and "USED" in pools.stdout
    try:
        created = daemon.cli(
            "volume", "create", "cli-vol", "--size", "64M", "--pool", "cli-pool", "--format", "raw"
        )
        assert created.code == 0 and (vol_dir / "cli-vol.raw").stat().st_size == 64 * 1024**2
        assert daemon.cli("launch", "tiny", "cli-vols", "--memory", "128M", "--no-start").code == 0
        assert daemon.cli("volume", "attach", "cli-vol", "cli-vols").code == 0
        listed = json.loads(daemon.cli("volume", "list", "--format", "json").stdout)
        assert [v["vm"] for v in listed if v["name"] == "cli-vol"] == ["cli-vols"]
        refused = daemon.cli("volume", "delete", "cli-vol")
        assert refused.code == 4 and "in use by VM 'cli-vols'" in refused.stderr
        # A neutral hint, then the CLI's command for it.
        assert "detach it from VM 'cli-vols' first" in refused.stderr, refused
        assert "try: hangar volume detach cli-vol cli-vols" in refused.stderr, refused
        grown = daemon.cli("volume", "resize", "cli-vol", "--size", "128M")
        assert grown.code == 0 and (vol_dir / "cli-vol.raw").stat().st_size == 128 * 1024**2
        shrink = daemon.cli("resize", "cli-vols", "--disk", "64M")
        assert shrink.code == 2 and "only grow" in shrink.stderr
        assert "2G disk" in daemon.cli("resize", "cli-vols", "--disk", "2G").stdout
        assert daemon.cli("volume", "detach", "cli-vol", "cli-vols").code == 0
        assert daemon.cli("volume", "delete", "cli-vol").code == 0
    finally:
        daemon.cli("delete", "cli-vols", "--force")
        daemon.cli("volume", "delete", "cli-vol")
    assert daemon.cli("storage", "pool", "delete", "cli-pool").code == 0
