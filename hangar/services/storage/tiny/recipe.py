"""The "tiny" image: Debian's kernel, a busybox initramfs and a busybox ext4 root disk.

Built only from Debian package archives (linux-image, busybox-static, and
resize2fs with its libraries), with nothing installed on the host. The guest
takes a DHCP lease, serves HTTP on port 80, offers a root shell on ttyS0,
powers off on the ACPI power button and prints ``HANGAR-BOOT-COMPLETE`` once up.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.runner import CommandRunner
from hangar.services.storage.images import ImageDefaults, ImageManifest, ProgressFn
from hangar.services.storage.tiny import cpio, debs
from hangar.services.storage.tiny.kernel import KernelParts, kernel_parts

HERE = Path(__file__).parent
GUEST = HERE / "guest"
BOOT_MARKER = "HANGAR-BOOT-COMPLETE"
DISK_SIZE = 128 * 1024 * 1024
BUSYBOX = "busybox-static"
# resize2fs, to grow the root filesystem online, and the libraries it links.
RESIZE_PACKAGES = ["e2fsprogs", "libext2fs2", "libcom-err2", "libc6"]
PACKAGES = [debs.KERNEL_META, BUSYBOX, *RESIZE_PACKAGES]
RESIZE_LIBS = ["libext2fs.so.2", "libe2p.so.2", "libcom_err.so.2", "libc.so.6"]
LOADER = "ld-linux-x86-64.so.2"
MULTIARCH = "lib/x86_64-linux-gnu"
# Bump when the build changes in a way the hashed files do not show.
RECIPE_VERSION = "1"
# Guest-specific kernel arguments. The crypto self-tests cost ~0.35 s of a
# ~2.3 s boot under TCG and guard against nothing here.
CMDLINE = "cryptomgr.notests"
# apt-cache takes ~0.5 s per call here; the store asks for the hash and then
# builds straight away, so one answer serves both for a short while.
RESOLVE_TTL = 60.0


class TinyRecipe:
    """Implements :class:`hangar.services.storage.images.Recipe`."""

    name = "tiny"
    # How many progress() calls a build makes: lets an operation show a percentage.
    progress_steps = 8

    def __init__(self, *, gzip_initrd: bool = False):
        # Uncompressed by default: it boots ~0.05 s faster under TCG (5 MB vs 2 MB).
        self.gzip_initrd = gzip_initrd
        self._resolved: tuple[float, dict[str, debs.Package]] | None = None

    def recipe_hash(self, runner: CommandRunner) -> str:
        """Digest of this package's files, the settings and the candidate package versions.

        Calls apt-cache only; downloads nothing.
        """
        return self._hash(self._resolve(runner))

    def _resolve(self, runner: CommandRunner) -> dict[str, debs.Package]:
        now = time.monotonic()
        if self._resolved is None or now - self._resolved[0] > RESOLVE_TTL:
            self._resolved = (now, debs.resolve(runner, PACKAGES))
        return self._resolved[1]

    def build(
        self, out_dir: Path, cache_dir: Path, runner: CommandRunner, progress: ProgressFn
    ) -> ImageManifest:
        progress("resolving Debian packages")
        packages = self._resolve(runner)
        progress("fetching " + ", ".join(f"{p.name} {p.version}" for p in packages.values()))
        fetched = dict(
            zip(packages, debs.fetch(runner, list(packages.values()), cache_dir), strict=True)
        )

        progress("preparing the kernel (vmlinux and modules)")
        kernel = kernel_parts(runner, fetched[debs.KERNEL_META], cache_dir)
        _link_or_copy(kernel.vmlinux, out_dir / "vmlinux")

        work = out_dir / ".work"
        try:
            progress("unpacking busybox and resize2fs")
            trees = {
                k: debs.unpack(runner, fetched[k], work / k)
                for k in fetched
                if k != debs.KERNEL_META
            }
            busybox = trees[BUSYBOX] / "bin" / "busybox"
            applets = _applets(runner, busybox)

            progress("writing the initramfs")
            initrd = cpio.archive(_initramfs_entries(busybox, applets, kernel))
            if self.gzip_initrd:
                initrd = gzip.compress(initrd, compresslevel=6, mtime=0)
            (out_dir / "initrd.img").write_bytes(initrd)

            progress("assembling the root filesystem")
            rootfs = work / "rootfs"
            _make_rootfs(rootfs, busybox, applets, trees, packages)
            # The one program hangar compiles (no Debian package issues the ioctl):
            # see reseed.c. Static, so it needs nothing from the guest.
            runner.run(
                ["gcc", "-static", "-Os", "-s", "-o", str(rootfs / "sbin" / "hangar-reseed"),
                 str(HERE / "reseed.c")],
                timeout=120,
            )  # fmt: skip

            progress("making the ext4 disk")
            raw = work / "disk.raw"
            runner.run(
                [
                    "mkfs.ext4", "-q", "-F", "-T", "default", "-L", "hangar-root",
                    # Zero inode tables and journal now, so the guest's
                    # ext4lazyinit thread does not write them at every first boot.
                    "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    "-d", str(rootfs), str(raw), str(DISK_SIZE // 1024) + "k",
                ],
                timeout=120,
            )  # fmt: skip
            runner.run(
                ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                 str(out_dir / "disk.qcow2")],
                timeout=120,
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)

        progress("done")
        return ImageManifest(
            name=self.name,
            recipe_hash=self._hash(packages),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kernel="vmlinux",
            initrd="initrd.img",
            cmdline=CMDLINE,
            disk="disk.qcow2",
            disk_virtual_size=DISK_SIZE,
            boot_marker=BOOT_MARKER,
            defaults=ImageDefaults(cpus=1, memory=256 * 1024 * 1024, disk=1024 * 1024 * 1024),
            description=(
                f"Debian kernel {packages[debs.KERNEL_META].version} and busybox: "
                "DHCP, HTTP on port 80, root shell on the serial console"
            ),
        )

    def _hash(self, packages: dict[str, debs.Package]) -> str:
        digest = hashlib.sha256()
        settings = f"tiny {RECIPE_VERSION} gzip={self.gzip_initrd} disk={DISK_SIZE} {CMDLINE}"
        digest.update(f"{settings}\n".encode())
        for key in sorted(packages):
            p = packages[key]
            digest.update(f"package {key} {p.name} {p.version}\n".encode())
        for path in sorted(HERE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"file {path.relative_to(HERE).as_posix()}\n".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def _applets(runner: CommandRunner, busybox: Path) -> list[str]:
    """Where busybox installs each applet, e.g. ``usr/bin/awk`` (from the binary itself)."""
    out = runner.run([str(busybox), "--list-full"], timeout=30).stdout
    applets = sorted({line.strip().strip("/") for line in out.splitlines() if line.strip()})
    if "sbin/init" not in applets or "bin/sh" not in applets:
        raise InvalidInput("the busybox binary lacks init or sh")
    return applets


def _initramfs_entries(busybox: Path, applets: list[str], kernel: KernelParts) -> list[cpio.Entry]:
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "newroot", "lib",
            "lib/modules"]  # fmt: skip
    entries = [cpio.directory(d) for d in dirs]
    entries.append(cpio.file("bin/busybox", busybox.read_bytes(), 0o755))
    entries += [cpio.symlink(a, "/bin/busybox") for a in applets if a != "bin/busybox"]
    entries.append(cpio.file("init", (GUEST / "initramfs" / "init").read_bytes(), 0o755))
    for module in kernel.modules:
        entries.append(cpio.file(f"lib/modules/{module.name}", module.read_bytes()))
    order = "".join(f"{m.stem}\n" for m in kernel.modules)
    entries.append(cpio.file("lib/modules/load-order", order.encode()))
    return entries


def _make_rootfs(
    root: Path,
    busybox: Path,
    applets: list[str],
    trees: dict[str, Path],
    packages: dict[str, debs.Package],
) -> None:
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "root",
              "var/log", "mnt", MULTIARCH, "lib64"]:  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in applets:
        if applet != "bin/busybox":
            (root / applet).symlink_to("/bin/busybox")
    _copy_guest_files(GUEST / "rootfs", root)
    # Files the guest rewrites at each boot live on tmpfs, not on the disk.
    (root / "etc" / "hosts").symlink_to("/run/hosts")
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")
    (root / "etc" / "mtab").symlink_to("/proc/mounts")
    _install_resize2fs(root, trees)
    versions = "".join(f"{p.name} {p.version}\n" for p in packages.values())
    (root / "etc" / "hangar-image").write_text(f"tiny recipe {RECIPE_VERSION}\n{versions}")


def _copy_guest_files(src: Path, dst: Path) -> None:
    """Copy ``src`` into ``dst``; scripts (``#!``) become executable, whatever the
    package installer did to file modes."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        data = path.read_bytes()
        target.write_bytes(data)
        os.chmod(target, 0o755 if data.startswith(b"#!") else 0o644)


def _install_resize2fs(root: Path, trees: dict[str, Path]) -> None:
    found = [p for p in (trees["e2fsprogs"] / d / "resize2fs" for d in ("sbin", "usr/sbin"))
             if p.is_file()]  # fmt: skip
    if not found:
        raise InvalidInput("the e2fsprogs package holds no resize2fs")
    shutil.copyfile(found[0], root / "sbin" / "resize2fs")
    os.chmod(root / "sbin" / "resize2fs", 0o755)
    for soname in [*RESIZE_LIBS, LOADER]:
        source = _find_library(soname, trees)
        # Follow the package's soname symlink: copy the real file under the soname.
        shutil.copyfile(source, root / MULTIARCH / soname, follow_symlinks=True)
        os.chmod(root / MULTIARCH / soname, 0o755)
    # The ELF interpreter path compiled into every amd64 binary.
    (root / "lib64" / LOADER).symlink_to(f"/{MULTIARCH}/{LOADER}")


def _find_library(soname: str, trees: dict[str, Path]) -> Path:
    for key in RESIZE_PACKAGES:
        for folder in (MULTIARCH, f"usr/{MULTIARCH}"):
            path = trees[key] / folder / soname
            if path.exists():
                return path
    raise InvalidInput(f"no Debian package here provides {soname}")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link the cached 66 MB file (the store only renames it, nobody writes it),
    or copy it when the cache is on another filesystem."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
