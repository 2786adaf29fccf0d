"""The "debian-12" image: a Debian 12 cloud image built with debootstrap.

systemd, openssh-server, cloud-init and qemu-guest-agent on Debian's kernel, as a
qcow2 that boots three ways: directly (the kernel carved out as an uncompressed
vmlinux, the fast path under TCG), and from its own disk by BIOS (SYSLINUX) or
UEFI (GRUB) — see :mod:`.disk`. Every VM gets a NoCloud seed (services/storage/seed.py).

A finished build is kept in the cache (``cache_dir/images/debian-12-<hash>``) and
reused by every hangar home that shares it, so a test run builds it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.runner import CommandRunner
from hangar.services.storage.debian import disk
from hangar.services.storage.images import ImageDefaults, ImageManifest, ProgressFn
from hangar.services.storage.tiny import debs
from hangar.services.storage.tiny.vmlinux import extract_vmlinux

HERE = Path(__file__).parent
GUEST = HERE / "guest"
SUITE = "bookworm"
# minbase plus what a cloud guest needs. python3-cffi-backend: cloud-init depends on
# a virtual package that debootstrap cannot resolve (shared/MEASUREMENTS.md).
INCLUDE = [
    "linux-image-amd64", "systemd-sysv", "udev", "dbus", "openssh-server",
    "qemu-guest-agent", "cloud-init", "python3-cffi-backend", "iproute2", "sudo",
    "netbase", "ca-certificates",
]  # fmt: skip
# The initramfs loads only these (MODULES=list): root disk and NIC on microvm and q35.
INITRAMFS_MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "ext4"]
DISK_SIZE = 2 * 1024**3
DEFAULT_USER = "debian"  # the Debian cloud-init package's default_user
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Bump when the build changes in a way the hashed files do not show.
RECIPE_VERSION = "1"
_VERBS = re.compile(r"^I: (Retrieving|Validating|Resolving|Checking|Found|Extracting|"
                    r"Installing|Unpacking|Configuring|Base system)")  # fmt: skip


def find_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this host's apt uses for bookworm (HANGAR_DEBIAN_MIRROR wins).

    Reads deb822 ``*.sources`` and one-line ``*.list`` files; security mirrors are skipped.
    """
    if os.environ.get("HANGAR_DEBIAN_MIRROR"):
        return os.environ["HANGAR_DEBIAN_MIRROR"].rstrip("/")
    files = sorted(sources_dir.glob("sources.list.d/*.sources"))
    for path in files:
        for block in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in block.splitlines())
                if not k.startswith("#") and v
            )
            uris = fields.get("uris", "").split()
            if SUITE in fields.get("suites", "").split():
                for uri in uris:
                    if not uri.rstrip("/").endswith("-security"):
                        return uri.rstrip("/")
    lists = [sources_dir / "sources.list", *sorted(sources_dir.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1].rstrip("/")
    return FALLBACK_MIRROR


class DebianRecipe:
    """Implements :class:`hangar.services.storage.images.Recipe`."""

    name = "debian-12"
    # Roughly how many progress() calls a build makes (debootstrap phases included).
    progress_steps = 24

    def __init__(self, mirror: str | None = None):
        self.mirror = mirror or find_mirror()

    def recipe_hash(self, runner: CommandRunner) -> str:
        """Digest of the recipe files, the settings, debootstrap's version and the candidate
        versions of the packages asked for. Calls apt-cache and dpkg-query only."""
        records = debs.show(runner, INCLUDE)
        tool = runner.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], timeout=30)
        digest = hashlib.sha256()
        settings = f"debian-12 {RECIPE_VERSION} {SUITE} {self.mirror} disk={DISK_SIZE}"
        digest.update(f"{settings}\ndebootstrap {tool.stdout.strip()}\n".encode())
        digest.update(" ".join(INITRAMFS_MODULES).encode())
        for name in sorted(records):
            digest.update(f"package {name} {records[name].get('Version', '')}\n".encode())
        for path in sorted(HERE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"file {path.relative_to(HERE).as_posix()}\n".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def build(
        self, out_dir: Path, cache_dir: Path, runner: CommandRunner, progress: ProgressFn
    ) -> ImageManifest:
        progress("resolving Debian packages")
        digest = self.recipe_hash(runner)
        cached = cache_dir / "images" / f"{self.name}-{digest[:16]}"
        if (cached / "image.json").is_file():
            progress(f"using the build cached in {cached}")
            return _link_cached(cached, out_dir)

        work = out_dir / ".work"
        try:
            manifest = self._build(work, out_dir, cache_dir, runner, progress, digest)
        finally:
            _unmount_all(runner, work)
            shutil.rmtree(work, ignore_errors=True)
        _store_cached(out_dir, manifest, cached)
        progress("done")
        return manifest

    def _build(
        self,
        work: Path,
        out_dir: Path,
        cache_dir: Path,
        runner: CommandRunner,
        progress: ProgressFn,
        digest: str,
    ) -> ImageManifest:
        rootfs = work / "rootfs"
        work.mkdir(parents=True, exist_ok=True)
        packages = cache_dir / "debootstrap"
        packages.mkdir(parents=True, exist_ok=True)
        progress(f"debootstrap {SUITE} from {self.mirror} (about 2 minutes)")
        last = [""]

        def phase(chunk: str) -> None:
            for line in chunk.splitlines():
                match = _VERBS.match(line)
                if match and match.group(1) != last[0]:
                    last[0] = match.group(1)
                    progress("debootstrap: " + line[3:].rstrip("."))

        # debootstrap reports on stderr; merged so its progress streams.
        runner.run(
            ["sh", "-c", 'exec "$@" 2>&1', "debootstrap", "debootstrap", "--variant=minbase",
             f"--cache-dir={packages}", "--include=" + ",".join(INCLUDE), SUITE, str(rootfs),
             self.mirror],
            timeout=1800,
            on_output=phase,
        )  # fmt: skip

        progress("configuring the guest (cloud-init, network, initramfs)")
        version = _kernel_version(rootfs)
        root_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hangar:debian-12:{digest}"))
        _configure(rootfs, self.mirror, root_uuid, version)
        runner.run(["chroot", str(rootfs), "update-initramfs", "-u", "-k", version], timeout=600)

        progress("preparing the kernel for direct boot (uncompressed vmlinux)")
        vmlinuz = rootfs / "boot" / f"vmlinuz-{version}"
        (out_dir / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        shutil.copyfile(rootfs / "boot" / f"initrd.img-{version}", out_dir / "initrd.img")

        layout = disk.Layout(DISK_SIZE)
        progress("making the ext4 root filesystem")
        root = work / "root.raw"
        runner.run(
            ["mkfs.ext4", "-q", "-F", "-L", "hangar-root", "-U", root_uuid,
             "-E", "lazy_itable_init=0,lazy_journal_init=0",
             "-d", str(rootfs), str(root), f"{layout.root_bytes // 1024}k"],
            timeout=600,
        )  # fmt: skip
        shutil.rmtree(rootfs)

        progress("installing SYSLINUX for BIOS boot")
        mnt = work / "mnt"
        mnt.mkdir()
        runner.run(["mount", "-o", "loop", str(root), str(mnt)], timeout=60)
        try:
            runner.run(["extlinux", "--install", str(mnt / "boot" / "extlinux")], timeout=60)
        finally:
            runner.run(["umount", str(mnt)], timeout=60)

        progress("making the EFI system partition (GRUB for UEFI boot)")
        esp = work / "esp.raw"
        cfg = work / "grub.cfg"
        cfg.write_text(disk.grub_cfg(root_uuid, version))
        efi = work / "BOOTX64.EFI"
        runner.run(
            ["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
             f"--install-modules={disk.GRUB_MODULES}", f"--modules={disk.GRUB_MODULES}",
             "--locales=", "--fonts=", "--themes=", f"boot/grub/grub.cfg={cfg}"],
            timeout=120,
        )  # fmt: skip
        runner.run(
            # FAT16: 32 MiB is too small for FAT32 (mtools refuses it); OVMF reads both.
            ["mkfs.vfat", "-n", "EFI", "-C", str(esp), str(layout.esp_bytes // 1024)],
            timeout=60,
        )
        runner.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], timeout=60)
        runner.run(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], timeout=60)

        progress("assembling the GPT disk")
        raw = work / "disk.raw"
        with raw.open("wb") as f:
            f.truncate(layout.total_bytes)
        runner.run(["sfdisk", "-q", str(raw)], input_text=disk.sfdisk_script(layout), timeout=60)
        disk.install_mbr_code(raw, disk.GPTMBR.read_bytes())
        disk.copy_into(esp, raw, disk.ESP_START * disk.SECTOR)
        disk.copy_into(root, raw, disk.ROOT_START * disk.SECTOR)
        root.unlink()
        progress("converting to qcow2")
        runner.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
             str(out_dir / "disk.qcow2")],
            timeout=600,
        )  # fmt: skip

        return ImageManifest(
            name=self.name,
            recipe_hash=digest,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kernel="vmlinux",
            initrd="initrd.img",
            cmdline=f"root=UUID={root_uuid} ro",
            disk="disk.qcow2",
            disk_virtual_size=DISK_SIZE,
            # systemd's serial getty: the guest is up and cloud-init has run by then.
            boot_marker="login:",
            defaults=ImageDefaults(cpus=1, memory=1024**3, disk=DISK_SIZE),
            description=(
                f"Debian 12 ({SUITE}), kernel {version}: systemd, openssh-server, cloud-init, "
                "qemu-guest-agent; boots directly, by BIOS or by UEFI"
            ),
            firmware=("bios", "uefi"),
            cloud_init=True,
            default_user=DEFAULT_USER,
            agent=True,
        )


def _kernel_version(rootfs: Path) -> str:
    found = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise InvalidInput(f"debootstrap left {len(found)} kernels in /boot, not one")
    return found[0].name.removeprefix("vmlinuz-")


def _configure(rootfs: Path, mirror: str, root_uuid: str, version: str) -> None:
    """Files hangar adds or changes in the freshly bootstrapped system."""
    for path in sorted(GUEST.rglob("*")):
        target = rootfs / path.relative_to(GUEST)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copyfile(path, target)
            os.chmod(target, 0o644)
    etc = rootfs / "etc"
    with (etc / "initramfs-tools" / "modules").open("a") as f:
        f.write("".join(f"{m}\n" for m in INITRAMFS_MODULES))
    (etc / "fstab").write_text(f"UUID={root_uuid} / ext4 defaults,noatime,errors=remount-ro 0 1\n")
    (etc / "hostname").write_text("debian\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    (etc / "apt" / "sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
        f"deb {mirror.removesuffix('/debian')}/debian-security {SUITE}-security main\n"
    )
    # Enabled as `systemctl enable` would; cloud-init renders its network for networkd.
    wants = etc / "systemd" / "system"
    for unit, wanted_by in (("systemd-networkd.service", "multi-user.target.wants"),
                            ("systemd-networkd.socket", "sockets.target.wants")):  # fmt: skip
        (wants / wanted_by).mkdir(parents=True, exist_ok=True)
        link = wants / wanted_by / unit
        if not link.exists():
            link.symlink_to(f"/lib/systemd/system/{unit}")
    # Each VM is a new machine: new machine-id, new SSH host keys (cloud-init makes them).
    (etc / "machine-id").write_text("")
    for key in etc.glob("ssh/ssh_host_*"):
        key.unlink()
    extlinux = rootfs / "boot" / "extlinux"
    extlinux.mkdir(parents=True, exist_ok=True)
    (extlinux / "extlinux.conf").write_text(disk.extlinux_conf(root_uuid, version))
    # Downloaded archives and package lists: the guest's apt fetches fresh ones.
    for where in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / where).glob("*"):
            if entry.is_file():
                entry.unlink()


def _unmount_all(runner: CommandRunner, work: Path) -> None:
    """A failed build must not leave a loop mount behind."""
    mnt = work / "mnt"
    if mnt.is_dir() and os.path.ismount(mnt):
        runner.run(["umount", "-l", str(mnt)], check=False, timeout=60)


def _link_cached(cached: Path, out_dir: Path) -> ImageManifest:
    manifest = ImageManifest.model_validate_json((cached / "image.json").read_text())
    for member in ("vmlinux", "initrd.img", "disk.qcow2"):
        _link_or_copy(cached / member, out_dir / member)
    return manifest.model_copy(
        update={"created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    )


def _store_cached(out_dir: Path, manifest: ImageManifest, cached: Path) -> None:
    """Keep the build in the shared cache (hard links: no copy on one filesystem)."""
    tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for member in ("vmlinux", "initrd.img", "disk.qcow2"):
            _link_or_copy(out_dir / member, tmp / member)
        (tmp / "image.json").write_text(manifest.model_dump_json(indent=2) + "\n")
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
