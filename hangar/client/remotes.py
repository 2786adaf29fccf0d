"""The CLI's remotes: other hangards reached over HTTPS with a token, their
certificates pinned on first use (as SSH pins host keys).

Kept in ``$XDG_CONFIG_HOME/hangar/remotes.json`` (default ``~/.config/hangar``),
mode 0600 since it holds tokens. ``local`` (the unix socket) always exists.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hangar.certs import fingerprint, harden
from hangar.errors import CertificateChanged, Conflict, DaemonUnavailable, InvalidInput, NotFound

FORMAT_VERSION = 1
LOCAL = "local"


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    token: str
    certificate: str  # PEM, pinned
    fingerprint: str
    project: str | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_url(self.url)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts exactly the pinned certificate, whatever name the host is reached by."""
        context = ssl.create_default_context(cadata=self.certificate)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        return harden(context)

    def check_peer(self, der: bytes | None) -> None:
        """Raise :class:`CertificateChanged` unless ``der`` is the pinned certificate."""
        if der is None or fingerprint(der) != self.fingerprint:
            raise changed(self, fingerprint(der) if der else "none")


def changed(remote: Remote, seen: str) -> CertificateChanged:
    return CertificateChanged(
        f"the certificate of remote '{remote.name}' ({remote.url}) has changed: "
        f"pinned {remote.fingerprint}, the server now shows {seen}. Refusing to connect "
        "(someone may be in the middle)",
        hint=f"if the server's certificate was replaced on purpose, run "
        f"'hangar remote remove {remote.name}' and add it again",
    )


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput(f"'{url}' is not an https URL", hint="give it as https://HOST:PORT")
    return parts.hostname, parts.port or 8443


def fetch_certificate(url: str, timeout: float = 10.0) -> str:
    """The PEM certificate the server at ``url`` presents (not verified: that is the point)."""
    host, port = parse_url(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    harden(context)  # a server that speaks only old TLS is not one to pin
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot reach {url}: {exc}", hint="check the address and that hangard --listen runs"
        ) from exc
    if der is None:
        raise DaemonUnavailable(f"{url} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def config_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "hangar"


class RemoteStore:
    def __init__(self, folder: Path | None = None):
        self.folder = folder or config_dir()
        self.path = self.folder / "remotes.json"

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format_version": FORMAT_VERSION, "current": LOCAL, "remotes": {}}
        data: dict[str, Any] = json.loads(self.path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise InvalidInput(
                f"{self.path} has format version {data.get('format_version')}",
                hint=f"this hangar reads version {FORMAT_VERSION}",
            )
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.path.with_suffix(".tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(staging, self.path)

    def list(self) -> list[Remote]:
        return [Remote(**r) for _, r in sorted(self._load()["remotes"].items())]

    def current(self) -> str:
        return str(self._load().get("current", LOCAL))

    def get(self, name: str) -> Remote:
        remotes = self._load()["remotes"]
        if name not in remotes:
            known = ", ".join([LOCAL, *sorted(remotes)])
            raise NotFound(f"no remote named '{name}'", hint=f"remotes: {known}")
        return Remote(**remotes[name])

    def add(self, remote: Remote) -> None:
        if remote.name == LOCAL:
            raise Conflict("'local' is the unix socket of this host", hint="pick another name")
        data = self._load()
        if remote.name in data["remotes"]:
            raise Conflict(
                f"a remote named '{remote.name}' already exists",
                hint=f"remove it first: 'hangar remote remove {remote.name}'",
            )
        data["remotes"][remote.name] = asdict(remote)
        self._save(data)

    def remove(self, name: str) -> None:
        data = self._load()
        self.get(name)
        del data["remotes"][name]
        if data.get("current") == name:
            data["current"] = LOCAL
        self._save(data)

    def switch(self, name: str) -> None:
        if name != LOCAL:
            self.get(name)
        data = self._load()
        data["current"] = name
        self._save(data)
