"""TinyRecipe.recipe_hash and package resolution, against a fake apt-cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.runner import CommandResult
from hangar.services.storage.tiny import TinyRecipe, debs, recipe
from tests.support.recording_runner import Call, ScriptedRunner

VERSIONS = {
    "linux-image-amd64": "6.1.192-2",
    "linux-image-6.1.0-56-amd64": "6.1.192-2",
    "busybox-static": "1:1.35.0-4+deb12u1+b1",
    "e2fsprogs": "1.47.0-2+b2",
    "libext2fs2": "1.47.0-2+b2",
    "libcom-err2": "1.47.0-2+b2",
    "libc6": "2.36-9+deb12u14",
}


class FakeApt(ScriptedRunner):
    """Answers ``apt-cache show`` from a version table; records every argv."""

    def __init__(self, versions: dict[str, str]):
        super().__init__()
        self.versions = dict(versions)

    def respond(self, call: Call) -> CommandResult:
        argv, cwd, timeout = call.argv, call.cwd, call.timeout  # noqa: F841
        assert list(argv[:3]) == ["apt-cache", "show", "--no-all-versions"]
        records = []
        for arg in argv[3:]:
            name = arg
            if name not in self.versions:
                continue
            version = self.versions[name]
            record = [f"Package: {name}", f"Version: {version}", "Architecture: amd64"]
            if name == "linux-image-amd64":
                kernel = next(n for n in self.versions if n.startswith("linux-image-6"))
                record.append(f"Depends: {kernel} (= {self.versions[kernel]})")
            records.append("\n".join(record))
        return CommandResult(tuple(argv), 0, "\n\n".join(records) + "\n", "")


def test_resolve_follows_the_kernel_metapackage() -> None:
    runner = FakeApt(VERSIONS)
    packages = debs.resolve(runner, ["linux-image-amd64", "busybox-static"])
    kernel = packages["linux-image-amd64"]
    assert kernel.name == "linux-image-6.1.0-56-amd64"
    assert kernel.version == "6.1.192-2"
    assert kernel.filename == "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"
    assert packages["busybox-static"].version == "1:1.35.0-4+deb12u1+b1"
    assert packages["busybox-static"].filename == "busybox-static_1.35.0-4+deb12u1+b1_amd64.deb"
    # One apt-cache call answers everything, the kernel's exact version included.
    assert len(runner.calls) == 1


def test_resolve_names_missing_packages() -> None:
    versions = {k: v for k, v in VERSIONS.items() if k != "busybox-static"}
    with pytest.raises(InvalidInput, match="busybox-static"):
        debs.resolve(FakeApt(versions), ["busybox-static"])


def test_hash_is_stable_and_only_asks_apt_cache() -> None:
    runner = FakeApt(VERSIONS)
    first = TinyRecipe().recipe_hash(runner)
    assert first == TinyRecipe().recipe_hash(runner)
    assert len(first) == 64
    assert all(call[0] == "apt-cache" for call in runner.calls)


def test_hash_changes_with_package_versions() -> None:
    before = TinyRecipe().recipe_hash(FakeApt(VERSIONS))
    newer = {**VERSIONS, "busybox-static": "1:1.36.1-1"}
    assert TinyRecipe().recipe_hash(FakeApt(newer)) != before
    kernel = {k: v for k, v in VERSIONS.items() if not k.startswith("linux-image-6")}
    kernel |= {"linux-image-amd64": "6.1.200-1", "linux-image-6.1.0-60-amd64": "6.1.200-1"}
    assert TinyRecipe().recipe_hash(FakeApt(kernel)) != before


def test_hash_changes_when_a_guest_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(recipe.HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(recipe, "HERE", copy)
    before = TinyRecipe().recipe_hash(FakeApt(VERSIONS))
    assert before == TinyRecipe().recipe_hash(FakeApt(VERSIONS))

    rcs = copy / "guest" / "rootfs" / "etc" / "init.d" / "rcS"
    rcs.write_text(rcs.read_text() + "# changed\n")
    assert TinyRecipe().recipe_hash(FakeApt(VERSIONS)) != before


def test_hash_ignores_bytecode_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(recipe.HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(recipe, "HERE", copy)
    before = TinyRecipe().recipe_hash(FakeApt(VERSIONS))
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "recipe.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert TinyRecipe().recipe_hash(FakeApt(VERSIONS)) == before


def test_the_guest_files_are_packaged() -> None:
    guest = recipe.GUEST
    for rel in ["initramfs/init", "rootfs/etc/inittab", "rootfs/etc/init.d/rcS",
                "rootfs/etc/acpi/PWRF/00000080", "rootfs/etc/udhcpc/default.script"]:  # fmt: skip
        assert (guest / rel).is_file(), rel
    assert recipe.BOOT_MARKER in (guest / "rootfs" / "etc" / "profile").read_text()
