"""Image import with real qemu-img: every format in, every unsafe kind refused, nothing left.

Unsafe images point only at decoy files these tests create in their own tmp
folders (creating a qcow2 with an external data file truncates the file it names).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import Conflict, HostCommandFailed, InvalidInput
from hangar.runner import CommandResult, SubprocessRunner
from hangar.services.qemu import img
from hangar.services.storage import exporter, ovf
from hangar.services.storage.exporter import Hardware
from hangar.services.storage.formats import UnsafeImage
from hangar.services.storage.images import ImageStore
from hangar.services.storage.importer import BootKit, Importer, ImportRequest

RUN = SubprocessRunner()
MiB = 1024 * 1024


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    path = tmp_path / "decoy" / "host-secret"
    path.parent.mkdir()
    path.write_bytes(b"decoy host data " * 4096)
    return path


@pytest.fixture
def boot(tmp_path: Path) -> BootKit:
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "vmlinux").write_bytes(b"kernel")
    (kit / "initrd.img").write_bytes(b"initrd")
    return BootKit("tiny", kit / "vmlinux", kit / "initrd.img", "quiet", "MARKER")


@pytest.fixture
def ext4_raw(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "proof").write_text("round trip\n")
    raw = tmp_path / "src" / "root.raw"
    raw.parent.mkdir()
    sh("mkfs.ext4", "-q", "-F", "-d", str(root), str(raw), "16M")
    return raw


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_import(store: ImageStore, source: Path, boot: BootKit | None = None, **kw: Any) -> Any:
    request = ImportRequest(source=source, name=kw.pop("name", "img"), **kw)
    return Importer(store, RUN).run(request, boot)


def assert_nothing_left(store: ImageStore) -> None:
    leftovers = sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []
    assert leftovers == []


def same_content(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    proc = subprocess.run(
        ["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)], capture_output=True
    )
    return proc.returncode == 0


# --- formats that import -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("qcow2", ""),
        ("vmdk", "subformat=monolithicSparse"),
        ("vmdk", "subformat=streamOptimized"),
        ("vdi", ""),
        ("vhdx", ""),
    ],
)
def test_each_disk_format_imports_with_the_same_content(
    store: ImageStore, ext4_raw: Path, boot: BootKit, fmt: str, options: str
) -> None:
    source = ext4_raw.with_suffix(f".{fmt}")
    argv = ["qemu-img", "convert", "-f", "raw", "-O", fmt, str(ext4_raw), str(source)]
    sh(*argv[:6], *(["-o", options] if options else []), *argv[6:])
    manifest = run_import(store, source, boot, name="img")
    folder = store.path("img")
    assert same_content(ext4_raw, "raw", folder / manifest.disk, "qcow2")
    assert manifest.disk_virtual_size == 16 * MiB
    # An ext4 root disk gets the boot kit: launchable with the tiny kernel.
    assert manifest.kernel == "vmlinux" and (folder / "vmlinux").read_bytes() == b"kernel"
    assert manifest.boot_marker == "MARKER" and manifest.origin == "import"
    assert sorted(p.name for p in store.root.iterdir()) == ["img"]


def test_raw_ext4_imports_and_non_ext4_is_kept_for_bios_boot(
    store: ImageStore, ext4_raw: Path, boot: BootKit, tmp_path: Path
) -> None:
    assert run_import(store, ext4_raw, boot, name="a").kernel == "vmlinux"
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\x00" * MiB)
    manifest = run_import(store, blank, boot, name="b")
    assert manifest.kernel is None and "BIOS boot" in manifest.description
    assert run_import(store, ext4_raw, None, name="c").kernel is None


def test_name_taken_is_a_conflict(store: ImageStore, ext4_raw: Path) -> None:
    run_import(store, ext4_raw, name="a")
    with pytest.raises(Conflict):
        run_import(store, ext4_raw, name="a")


def test_exported_ova_imports_with_its_hardware(
    store: ImageStore, ext4_raw: Path, boot: BootKit, tmp_path: Path
) -> None:
    qcow = tmp_path / "vm.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(ext4_raw), str(qcow))
    out = tmp_path / "out" / "vm.ova"
    out.parent.mkdir()
    exporter.export(RUN, qcow, "ova", out, Hardware("web", 2, 192 * MiB, 1))
    assert sorted(os.listdir(out.parent)) == ["vm.ova"]  # no temporary files left
    with tarfile.open(out) as tar:
        assert [n.rsplit(".", 1)[1] for n in tar.getnames()] == ["ovf", "mf", "vmdk"]
    manifest = run_import(store, out, boot, name="web")
    assert (manifest.defaults.cpus, manifest.defaults.memory, manifest.defaults.nics) == (
        2,
        192 * MiB,
        1,
    )
    assert same_content(qcow, "qcow2", store.path("web") / manifest.disk, "qcow2")


def test_qcow2_to_vmdk_to_qcow2_round_trip(
    store: ImageStore, ext4_raw: Path, tmp_path: Path
) -> None:
    qcow = tmp_path / "a.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(ext4_raw), str(qcow))
    vmdk = tmp_path / "a.vmdk"
    exporter.export(RUN, qcow, "vmdk", vmdk, Hardware("a", 1, 128 * MiB, 1))
    manifest = run_import(store, vmdk, name="back")
    back = store.path("back") / manifest.disk
    assert same_content(qcow, "qcow2", back, "qcow2")
    again = tmp_path / "again.qcow2"
    exporter.export(RUN, back, "qcow2", again, Hardware("a", 1, 128 * MiB, 1))
    assert same_content(ext4_raw, "raw", again, "qcow2")
    with pytest.raises(Conflict, match="already exists"):
        exporter.export(RUN, back, "raw", again, Hardware("a", 1, 128 * MiB, 1))


# --- unsafe images: refused, nothing left, decoy untouched -----------------------------


def test_raw_file_that_is_not_whole_sectors_is_refused(store: ImageStore, tmp_path: Path) -> None:
    # /etc/passwd-like text: qemu-img would happily call it a raw disk.
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 10)
    assert text.stat().st_size % 512
    with pytest.raises(UnsafeImage, match="multiple of 512 bytes"):
        run_import(store, text, format="raw")
    with pytest.raises(UnsafeImage, match="multiple of 512 bytes"):
        run_import(store, text)  # detected as raw: the same refusal
    assert_nothing_left(store)


def test_qcow2_with_backing_file_naming_a_host_file(
    store: ImageStore, decoy: Path, tmp_path: Path
) -> None:
    before = digest(decoy)
    bad = tmp_path / "backed.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(decoy), "-F", "raw", str(bad))
    with pytest.raises(UnsafeImage, match="backing file") as info:
        run_import(store, bad)
    assert str(decoy) in info.value.message
    assert_nothing_left(store)
    assert digest(decoy) == before


def test_qcow2_with_external_data_file(store: ImageStore, decoy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "datafile.qcow2"
    # This truncates and takes over the decoy: never point it at a real file.
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={decoy}", str(bad), "1M")
    before = digest(decoy)
    with pytest.raises(UnsafeImage, match="external data file"):
        run_import(store, bad)
    assert_nothing_left(store)
    assert digest(decoy) == before


def test_vmdk_descriptor_file_with_extent_naming_a_host_file(
    store: ImageStore, decoy: Path, tmp_path: Path
) -> None:
    before = digest(decoy)
    bad = tmp_path / "desc.vmdk"
    bad.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\nRW 128 FLAT "{decoy}" 0\n'
    )
    for fmt in (None, "vmdk"):
        with pytest.raises(UnsafeImage, match="VMDK descriptor file"):
            run_import(store, bad, format=fmt)
    assert_nothing_left(store)
    assert digest(decoy) == before


def test_sparse_vmdk_whose_embedded_descriptor_names_a_host_file(
    store: ImageStore, decoy: Path, tmp_path: Path
) -> None:
    before = digest(decoy)
    bad = tmp_path / "sparse.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", str(bad), "1M")
    with bad.open("r+b") as f:
        head = f.read(512)
        _capacity, _grain, offset, size = struct.unpack_from("<QQQQ", head, 12)
        f.seek(offset * 512)
        text = (
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            f'createType="monolithicSparse"\nRW 2048 SPARSE "{decoy}"\n'
        ).encode()
        f.write(text.ljust(size * 512, b"\x00"))
    with pytest.raises(UnsafeImage, match="not a plain name"):
        run_import(store, bad)
    assert_nothing_left(store)
    assert digest(decoy) == before


def _ova(path: Path, members: Sequence[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_ova_with_members_escaping_the_folder(store: ImageStore, tmp_path: Path) -> None:
    descriptor = ovf.render(ovf.ExportSpec("x", 1, 128 * MiB, "x-disk1.vmdk", 10, MiB, 1)).encode()
    bad = _ova(tmp_path / "evil.ova", [("x.ovf", descriptor), ("../escaped", b"gotcha")])
    with pytest.raises(UnsafeImage, match="outside its folder"):
        run_import(store, bad)
    assert_nothing_left(store)
    assert not (store.root.parent / "escaped").exists()
    assert not (tmp_path / "escaped").exists()


def test_ova_descriptor_naming_a_path_is_refused(store: ImageStore, tmp_path: Path) -> None:
    descriptor = (
        ovf.render(ovf.ExportSpec("x", 1, 128 * MiB, "x-disk1.vmdk", 10, MiB, 1))
        .replace("x-disk1.vmdk", "../../etc/shadow")
        .encode()
    )
    bad = _ova(tmp_path / "evil.ova", [("x.ovf", descriptor)])
    with pytest.raises(InvalidInput, match="not a plain file name"):
        run_import(store, bad)
    assert_nothing_left(store)


def test_ova_disk_not_matching_its_manifest(
    store: ImageStore, ext4_raw: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vm.ova"
    qcow = tmp_path / "vm.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(ext4_raw), str(qcow))
    exporter.export(RUN, qcow, "ova", out, Hardware("vm", 1, 128 * MiB, 1))
    with tarfile.open(out) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    members = [(n, d[:-1] + b"\x01" if n.endswith(".vmdk") else d) for n, d in members]
    with pytest.raises(InvalidInput, match="does not match its manifest"):
        run_import(store, _ova(tmp_path / "tampered.ova", members))
    assert_nothing_left(store)


def test_raw_file_that_starts_like_a_qcow2_image(store: ImageStore, tmp_path: Path) -> None:
    bad = tmp_path / "disguised.img"
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(bad), "1M")
    with pytest.raises(UnsafeImage, match="said to be raw but starts like a qcow/qcow2"):
        run_import(store, bad, format="raw")
    assert_nothing_left(store)


def test_virtual_size_over_the_limit(store: ImageStore, tmp_path: Path) -> None:
    big = tmp_path / "big.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(big), "10G")
    with pytest.raises(UnsafeImage, match="over the limit of 1G"):
        run_import(store, big, max_virtual_size=1024**3)
    assert_nothing_left(store)


def test_image_failing_qemu_img_check(store: ImageStore, ext4_raw: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(ext4_raw), str(bad))
    with bad.open("r+b") as f:
        header = f.read(104)
        (table,) = struct.unpack_from(">Q", header, 48)
        f.seek(table)
        (block,) = struct.unpack(">Q", f.read(8))
        f.seek(block)
        f.write(b"\x00" * 65536)  # every refcount zero: qemu-img check finds corruption
    with pytest.raises(UnsafeImage, match="'qemu-img check' finds it damaged") as info:
        run_import(store, bad)
    assert "ERROR" in info.value.message and "repair" in info.value.hint
    assert_nothing_left(store)


class FailingConvert(SubprocessRunner):
    """Fails qemu-img convert after it has written part of its output."""

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        if "convert" in argv:
            Path(argv[-1]).write_bytes(b"partial")
            raise HostCommandFailed(list(argv), 1, "disk full")
        return super().run(argv, **kw)


def test_failed_import_leaves_nothing(store: ImageStore, ext4_raw: Path) -> None:
    request = ImportRequest(source=ext4_raw, name="img")
    with pytest.raises(HostCommandFailed):
        Importer(store, FailingConvert()).run(request, None)
    assert_nothing_left(store)


def test_interrupted_import_is_swept(store: ImageStore) -> None:
    work = store.root / ".import-img-deadbeef"
    work.mkdir(parents=True)
    (work / "disk.qcow2").write_bytes(b"half")
    assert store.sweep() == [".import-img-deadbeef"]
    assert_nothing_left(store)
    assert store.list() == []


def test_file_qemu_img_cannot_open_is_refused(store: ImageStore, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.vhdx"
    bad.write_bytes(b"vhdxfile" + bytes(1000))
    with pytest.raises(UnsafeImage, match="qemu-img cannot read it as vhdx"):
        run_import(store, bad)
    assert_nothing_left(store)


def test_devices_and_missing_files_are_refused(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a regular file"):
        run_import(store, Path("/dev/null"))
    with pytest.raises(InvalidInput, match="cannot read"):
        run_import(store, tmp_path / "nope.qcow2")
    assert_nothing_left(store)
    shutil.rmtree(store.root, ignore_errors=True)


def test_ova_members_the_descriptor_does_not_name_are_not_used(
    store: ImageStore, ext4_raw: Path, boot: BootKit, tmp_path: Path
) -> None:
    qcow = tmp_path / "vm.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(ext4_raw), str(qcow))
    out = tmp_path / "vm.ova"
    exporter.export(RUN, qcow, "ova", out, Hardware("vm", 1, 128 * MiB, 1))
    with tarfile.open(out) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    members.append(("extra.sh", b"#!/bin/sh\necho not for hangar\n"))
    manifest = run_import(store, _ova(tmp_path / "extra.ova", members), boot, name="vm")
    assert sorted(p.name for p in store.path("vm").iterdir()) == sorted(
        ["image.json", manifest.disk, "vmlinux", "initrd.img"]
    )


def test_qemu_img_reads_a_file_from_outside_under_limits(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CVE-2015-5162: a crafted image can make 'qemu-img info' eat memory and CPU. With
    an address-space limit too small for qemu-img to even start, the import must fail:
    proof that the limits are really applied (and to 'info' of the outside file)."""
    good = tmp_path / "good.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(good), "1M")
    monkeypatch.setattr(img, "INFO_LIMITS", ("prlimit", f"--as={8 << 20}", "--cpu=30", "--"))
    with pytest.raises(UnsafeImage, match="qemu-img cannot read it"):
        run_import(store, good)
    assert_nothing_left(store)
    monkeypatch.undo()
    assert run_import(store, good).name == "img"  # the real limits let it through
