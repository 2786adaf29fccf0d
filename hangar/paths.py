"""Where hangar keeps its files.

By default state lives under /var/lib/hangar and runtime files under /run/hangar.
``HANGAR_HOME=DIR`` puts everything under one folder (``DIR/lib`` and
``DIR/run``) so that several hangard instances can run side by side.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import InvalidInput


@dataclass(frozen=True)
class Paths:
    state: Path
    runtime: Path
    # Downloaded packages; HANGAR_CACHE lets several homes share one.
    cache_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        home = env.get("HANGAR_HOME")
        cache = Path(env["HANGAR_CACHE"]).absolute() if env.get("HANGAR_CACHE") else None
        if home:
            root = Path(home).absolute()
            if "," in str(root):
                # QEMU's option syntax uses commas: a path with one breaks -chardev etc.
                raise InvalidInput(f"HANGAR_HOME '{root}' contains a comma", hint="pick another")
            return cls(state=root / "lib", runtime=root / "run", cache_dir=cache)
        return cls(state=Path("/var/lib/hangar"), runtime=Path("/run/hangar"), cache_dir=cache)

    @property
    def database(self) -> Path:
        return self.state / "hangar.db"

    @property
    def images(self) -> Path:
        return self.state / "images"

    @property
    def cache(self) -> Path:
        """Downloaded packages and build inputs; safe to delete."""
        return self.cache_dir or self.state / "cache"

    @property
    def vms(self) -> Path:
        return self.state / "vms"

    @property
    def socket(self) -> Path:
        """hangard's API socket. Its folder is 0700, so only root can open it."""
        return self.runtime / "api" / "hangard.sock"

    def vm_dir(self, vm_id: str) -> Path:
        return self.vms / vm_id

    def vm_runtime(self, vm_id: str) -> Path:
        # Unix socket paths are limited to 108 bytes: keep runtime names short.
        return self.runtime / "vm" / vm_id[:12]

    def ensure(self) -> None:
        """Make hangar's folders, private to hangard's user (0700) whatever they were:
        they hold guest disks and memory, configs with user-data, token hashes and the
        audit log. Files inside are private through hangard's umask (private_process)."""
        for path in (self.state, self.runtime):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (self.images, self.cache, self.vms, self.runtime / "vm", self.socket.parent):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (self.state, self.runtime, self.images, self.vms, self.socket.parent):
            path.chmod(0o700)
        for name in ("hangar.db", "hangar.db-wal", "hangar.db-shm"):
            with contextlib.suppress(FileNotFoundError):
                (self.state / name).chmod(0o600)


PRIVATE_UMASK = 0o077


def private_process() -> None:
    """Everything hangard and its children (QEMU, qemu-img, dnsmasq) create from now on
    is private to its owner, whatever umask hangard was started with."""
    os.umask(PRIVATE_UMASK)
