"""Fetching .debs into the cache with a fake ``apt-get download``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.runner import CommandResult
from hangar.services.storage.tiny.debs import Package, fetch
from tests.support.recording_runner import Call, ScriptedRunner


class FakeDownload(ScriptedRunner):
    """Writes one file per ``name=version`` into cwd, named the way apt-get does."""

    def __init__(self, skip: str = ""):
        super().__init__()
        self.skip = skip

    def respond(self, call: Call) -> CommandResult:
        argv, cwd, timeout = call.argv, call.cwd, call.timeout  # noqa: F841
        assert list(argv[:2]) == ["apt-get", "download"] and cwd is not None
        for arg in argv[2:]:
            name, _, version = arg.partition("=")
            if name != self.skip:
                (cwd / f"{name}_{version.replace(':', '%3a')}_amd64.deb").write_text(arg)
        return CommandResult(tuple(argv), 0, "", "")


BUSYBOX = Package("busybox-static", "1:1.35.0-4")
LIBC = Package("libc6", "2.36-9")


def test_downloads_missing_packages_in_one_call(tmp_path: Path) -> None:
    runner = FakeDownload()
    paths = fetch(runner, [BUSYBOX, LIBC], tmp_path)
    assert [p.name for p in paths] == [
        "busybox-static_1.35.0-4_amd64.deb",
        "libc6_2.36-9_amd64.deb",
    ]
    assert paths[0].read_text() == "busybox-static=1:1.35.0-4"
    assert runner.calls == [("apt-get", "download", "busybox-static=1:1.35.0-4", "libc6=2.36-9")]
    # Cached now: no second download, and no partial folder left behind.
    assert fetch(runner, [BUSYBOX, LIBC], tmp_path) == paths
    assert len(runner.calls) == 1
    assert sorted(p.name for p in (tmp_path / "debs").iterdir()) == [p.name for p in paths]


def test_a_missing_download_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="libc6"):
        fetch(FakeDownload(skip="libc6"), [BUSYBOX, LIBC], tmp_path)
    assert [p.name for p in (tmp_path / "debs").iterdir()] == ["busybox-static_1.35.0-4_amd64.deb"]
