"""OVA archives (uncompressed tar): read them without trusting them, write them for others.

Reading never calls ``tarfile.extract``: every member must be a regular file
with a plain name (no folder, no '..', no absolute path, no link or device);
otherwise the whole archive is refused. Only the descriptor and the files it
names are copied out, each to a path hangar chooses, while their checksums
are computed and compared with the manifest (``.mf``) when there is one.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.services.storage.formats import UnsafeImage

CHUNK = 1024 * 1024
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
_MF_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$")


def _refuse(why: str) -> UnsafeImage:
    return UnsafeImage(
        f"refusing the OVA: {why}",
        hint="an OVA must be a plain tar of the descriptor, its manifest and the files it "
        "names; export it again from its hypervisor",
    )


@dataclass
class OvaReader:
    """An open OVA whose member list has been checked."""

    path: Path
    tar: tarfile.TarFile
    members: dict[str, tarfile.TarInfo]

    @classmethod
    def open(cls, path: Path) -> OvaReader:
        try:
            tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (kept open by the reader)
        except tarfile.TarError as exc:
            raise _refuse(f"it is not an uncompressed tar archive ({exc})") from exc
        try:
            members = check_members(tar.getmembers())
        except BaseException:
            tar.close()
            raise
        return cls(path, tar, members)

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> OvaReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def descriptor_name(self) -> str:
        names = [n for n in self.members if n.lower().endswith(".ovf")]
        if len(names) != 1:
            raise _refuse(f"it holds {len(names)} .ovf descriptors, not exactly one")
        return names[0]

    def read_text(self, name: str, limit: int) -> str:
        member = self._member(name)
        if member.size > limit:
            raise _refuse(f"member '{name}' is {member.size} bytes long (limit {limit})")
        handle = self.tar.extractfile(member)
        if handle is None:
            raise _refuse(f"member '{name}' cannot be read")
        return handle.read().decode("utf-8", errors="replace")

    def extract(self, name: str, dest: Path, *, limit: int) -> str:
        """Copy member ``name`` to ``dest`` (a path hangar chose); returns its SHA256 hex."""
        member = self._member(name)
        if member.size > limit:
            raise _refuse(f"member '{name}' is {member.size} bytes, more than allowed ({limit})")
        handle = self.tar.extractfile(member)
        if handle is None:
            raise _refuse(f"member '{name}' cannot be read")
        digest = hashlib.sha256()
        with dest.open("xb") as out:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self.members.get(name)
        if member is None:
            raise _refuse(f"the descriptor names '{name}', which the archive does not hold")
        return member


def check_members(members: Iterable[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """Every member a regular file with a plain, unique name; else the OVA is refused."""
    checked: dict[str, tarfile.TarInfo] = {}
    for m in members:
        name = m.name.removeprefix("./")
        if name.startswith("/") or "/" in name or "\\" in name or name in (".", ".."):
            raise _refuse(f"member '{m.name}' would be unpacked outside its folder")
        if not _PLAIN.match(name):
            raise _refuse(f"member '{m.name}' does not have a plain file name")
        if not m.isreg():
            raise _refuse(f"member '{m.name}' is not a regular file (a link or device)")
        if name in checked:
            raise _refuse(f"member '{name}' appears twice")
        checked[name] = m
    return checked


def parse_manifest(text: str) -> dict[str, tuple[str, str]]:
    """``.mf`` lines ``SHA256(file)= hex`` -> {file: (algorithm, hex)}."""
    sums: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _MF_LINE.match(line.strip())
        if not match:
            raise _refuse(f"its manifest has a line that is not a checksum: '{line[:80]}'")
        sums[match.group(2).strip()] = (match.group(1), match.group(3).lower())
    return sums


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm.lower())
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(sums: dict[str, tuple[str, str]], name: str, path: Path) -> None:
    """Compare ``path`` with the manifest's checksum for ``name`` (if it lists one)."""
    if name not in sums:
        return
    algorithm, expected = sums[name]
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise InvalidInput(
            f"'{name}' in the OVA does not match its manifest ({algorithm} {actual}, "
            f"manifest says {expected})",
            hint="the archive is damaged or was altered; fetch it again",
        )


def write(out: Path, descriptor_name: str, descriptor: str, files: list[tuple[str, Path]]) -> None:
    """Write an OVA: descriptor, manifest (SHA256 of every other member), then the files."""
    body = descriptor.encode()
    sums = [f"SHA256({descriptor_name})= {hashlib.sha256(body).hexdigest()}"]
    sums += [f"SHA256({name})= {file_digest(path, 'sha256')}" for name, path in files]
    manifest = ("\n".join(sums) + "\n").encode()
    mf_name = descriptor_name.rsplit(".", 1)[0] + ".mf"
    now = int(time.time())
    with tarfile.open(out, mode="x", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((descriptor_name, body), (mf_name, manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, _Bytes(data))
        for name, path in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, now
            with path.open("rb") as f:
                tar.addfile(info, f)


class _Bytes:
    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk
