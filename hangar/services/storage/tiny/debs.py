"""Debian packages: resolve versions with apt-cache, fetch .debs into a cache, unpack them.

Nothing is installed on the host: ``apt-get download`` only fetches the archive
and ``dpkg-deb -x`` unpacks it into a folder of our choosing.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.runner import CommandRunner

ARCH = "amd64"
# The metapackage that always depends on the current kernel ABI.
KERNEL_META = "linux-image-amd64"
_DEPENDS_EXACT = re.compile(r"^\s*(\S+)\s*\(=\s*([^)\s]+)\s*\)")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str = ARCH

    @property
    def filename(self) -> str:
        """The archive's name as Debian's pool spells it: no epoch, ``libc6_2.36-9_amd64.deb``."""
        return f"{self.name}_{self.version.partition(':')[2] or self.version}_{self.arch}.deb"


def show(runner: CommandRunner, names: list[str]) -> dict[str, dict[str, str]]:
    """The candidate's ``apt-cache show`` record of each package, by package name."""
    result = runner.run(["apt-cache", "show", "--no-all-versions", *names], timeout=60)
    records: dict[str, dict[str, str]] = {}
    for block in result.stdout.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[0].isspace():
                fields[key] = value.strip()
        name = fields.get("Package")
        if name and fields.get("Architecture") in (ARCH, "all"):
            records.setdefault(name, fields)
    missing = [n for n in names if n not in records]
    if missing:
        raise InvalidInput(
            f"apt knows no {ARCH} package named {', '.join(missing)}",
            hint="run 'apt-get update' (Debian 12 'bookworm' sources are needed)",
        )
    return records


def resolve(runner: CommandRunner, names: list[str]) -> dict[str, Package]:
    """Candidate versions of ``names``, with one apt-cache call (~0.5 s each here).

    The kernel metapackage is replaced by the exact ``linux-image-<abi>-amd64``
    package and version it pins, returned under the key ``linux-image-amd64``.
    """
    records = show(runner, names)
    packages = {n: Package(n, records[n]["Version"], records[n]["Architecture"]) for n in names}
    if KERNEL_META in packages:
        match = _DEPENDS_EXACT.match(records[KERNEL_META].get("Depends", ""))
        if match is None:
            raise InvalidInput(f"cannot tell which kernel {KERNEL_META} depends on")
        packages[KERNEL_META] = Package(match.group(1), match.group(2), ARCH)
    return packages


def fetch(runner: CommandRunner, packages: list[Package], cache_dir: Path) -> list[Path]:
    """The packages' .debs in ``cache_dir/debs``; the missing ones are downloaded together.

    One ``apt-get download`` for all of them: each call costs ~0.5 s of apt start-up.
    """
    debs = cache_dir / "debs"
    missing = [p for p in packages if not (debs / p.filename).is_file()]
    if missing:
        # Download into a private folder and rename: an interrupted download
        # never leaves a half-written .deb under its final name.
        partial = debs / f".partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            wanted = [f"{p.name}={p.version}" for p in missing]
            runner.run(["apt-get", "download", *wanted], cwd=partial, timeout=900)
            for package in missing:
                # apt names the file name_version_arch.deb, with the epoch's ':' escaped.
                got = sorted(partial.glob(f"{package.name}_*.deb"))
                if len(got) != 1:
                    raise InvalidInput(f"apt-get download gave no single .deb for {package.name}")
                os.replace(got[0], debs / package.filename)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return [debs / p.filename for p in packages]


def unpack(runner: CommandRunner, deb: Path, into: Path) -> Path:
    """Unpack the files of ``deb`` (no maintainer scripts run) into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    runner.run(["dpkg-deb", "-x", str(deb), str(into)], timeout=300)
    return into
