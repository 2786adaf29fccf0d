"""A typed client for hangard's REST API: over its unix socket (the host administrator),
or over HTTPS to a remote with a token and a pinned certificate.

Used by the CLI, the tests and the benchmarks. API errors come back as
:class:`ApiError` carrying the daemon's message, hint and exit code.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hangar.certs import fingerprint
from hangar.client.api_error import ApiError as ApiError  # re-exported: callers catch it here
from hangar.client.guests_api import GuestsApi
from hangar.client.http import httpx
from hangar.client.network_api import NetworkApi
from hangar.client.platform_api import PlatformApi
from hangar.client.remotes import Remote, changed, fetch_certificate
from hangar.errors import DaemonUnavailable, HangarError
from hangar.paths import Paths

if TYPE_CHECKING:  # websockets is imported when a websocket opens (CLI start-up time)
    from websockets.sync.client import ClientConnection


class _PeerRememberingSocket(ssl.SSLSocket):
    """Keeps the peer's certificate from the handshake: websockets' reader thread closes
    the socket as soon as hangard closes the stream (a refused subscription closes at
    once), after which ``getpeercert`` has nothing to ask, and the pin would go unchecked."""

    peer_certificate: bytes | None = None

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        self.peer_certificate = self.getpeercert(binary_form=True)


def _unavailable(socket_path: Path, exc: Exception) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"hangard is not running (cannot connect to {socket_path}: {exc})",
        hint="start it with 'hangard &' as root (or run the README's demo command); "
        "set HANGAR_HOME if it runs with another home",
    )


class Client(PlatformApi, NetworkApi, GuestsApi):
    """``Client()`` talks to the local hangard; ``Client(remote=...)`` to a remote one.

    ``project`` is sent as ``?project=`` with every request (default: the token's
    project remotely, ``default`` locally).
    """

    def __init__(
        self,
        socket_path: Path | None = None,
        *,
        timeout: float = 120.0,
        remote: Remote | None = None,
        project: str | None = None,
    ):
        self.socket_path = socket_path or Paths.from_env().socket
        self.remote = remote
        self.project = project or (remote.project if remote else None)
        params = {"project": self.project} if self.project else None
        self._peer_checked = False
        if remote is None:
            self._http = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.socket_path)),
                base_url="http://hangard",
                timeout=timeout,
                params=params,
            )
        else:
            self._ssl = remote.ssl_context()
            self._http = httpx.Client(
                base_url=remote.url.rstrip("/"),
                verify=self._ssl,
                headers={"Authorization": f"Bearer {remote.token}"},
                timeout=timeout,
                params=params,
            )

    @property
    def where(self) -> str:
        return self.remote.url if self.remote else str(self.socket_path)

    def _unavailable(self, exc: Exception) -> HangarError:
        if self.remote is None:
            return _unavailable(self.socket_path, exc)
        if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            try:
                seen = fingerprint(fetch_certificate(self.remote.url))
            except HangarError:
                seen = "unknown"
            if seen != self.remote.fingerprint:
                return changed(self.remote, seen)
        return DaemonUnavailable(
            f"cannot reach remote '{self.remote.name}' at {self.remote.url}: {exc}",
            hint="check that hangard runs there with --listen, and the network",
        )

    def _check_peer(self, response: httpx.Response) -> None:
        """Belt and braces over the pinned CA: the peer must be the pinned certificate."""
        if self.remote is None or self._peer_checked:
            return
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        if ssl_object is not None:
            self.remote.check_peer(ssl_object.getpeercert(True))
            self._peer_checked = True

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            kwargs: dict[str, Any] = {"json": json, "params": params}
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise self._unavailable(exc) from exc
        self._check_peer(response)
        return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"message": response.text or f"HTTP {response.status_code}"}
            raise ApiError(response.status_code, body if isinstance(body, dict) else {})
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- host and images -------------------------------------------------------------

    def host_info(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/1.0/host"))

    def images(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/images"))

    def start_image_build(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Start building an image; returns the operation (202)."""
        return cast(
            dict[str, Any],
            self.request("POST", "/1.0/images", json={"name": name, "force": force}),
        )

    def build_image(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Build an image and wait for it; returns the build result."""
        op = self.wait_operation(self.start_image_build(name, force=force)["id"], timeout=1800)
        return cast(dict[str, Any], op["result"])

    def start_import(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        fmt: str | None = None,
        max_size: int | None = None,
    ) -> dict[str, Any]:
        """Start importing a host file as an image; returns the operation (202)."""
        body: dict[str, Any] = {"path": str(Path(path).absolute())}
        for key, value in (("name", name), ("format", fmt), ("max_size", max_size)):
            if value is not None:
                body[key] = value
        return cast(dict[str, Any], self.request("POST", "/1.0/images/import", json=body))

    def import_image(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        fmt: str | None = None,
        max_size: int | None = None,
    ) -> dict[str, Any]:
        """Import and wait; returns the import result (image and log)."""
        op = self.start_import(path, name=name, fmt=fmt, max_size=max_size)
        return self._result(op)

    def delete_image(self, name: str) -> None:
        self.request("DELETE", f"/1.0/images/{name}")

    def share_image(self, name: str, project: str | None) -> dict[str, Any]:
        body = {"project": project}
        return cast(dict[str, Any], self.request("PATCH", f"/1.0/images/{name}", json=body))

    def start_export(self, source: str, fmt: str, path: str | Path) -> dict[str, Any]:
        body = {"source": source, "format": fmt, "path": str(Path(path).absolute())}
        return cast(dict[str, Any], self.request("POST", "/1.0/exports", json=body))

    def export(self, source: str, fmt: str, path: str | Path) -> dict[str, Any]:
        return self._result(self.start_export(source, fmt, path))

    def start_copy(
        self, name: str, new_name: str, *, full: bool = False, start: bool = False
    ) -> dict[str, Any]:
        body = {"name": new_name, "full": full, "start": start}
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/copy", json=body))

    def copy(
        self, name: str, new_name: str, *, full: bool = False, start: bool = False
    ) -> dict[str, Any]:
        """Copy a VM and wait; returns the new VM."""
        return self._result(self.start_copy(name, new_name, full=full, start=start))

    def start_publish(
        self, name: str, template: str, *, warm: bool = False, standby: int = 0
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"template": template, "warm": warm}
        if standby:
            body["standby"] = standby
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/publish", json=body))

    def publish(
        self, name: str, template: str, *, warm: bool = False, standby: int = 0
    ) -> dict[str, Any]:
        """Publish a VM as a template and wait; returns the template's manifest."""
        return self._result(self.start_publish(name, template, warm=warm, standby=standby))

    def standby(self, template: str) -> dict[str, Any]:
        """A warm template's standby count and the standby VMs ready."""
        return cast(dict[str, Any], self.request("GET", f"/1.0/images/{template}/standby"))

    def set_standby(self, template: str, count: int) -> dict[str, Any]:
        """Keep ``count`` standby VMs of a warm template; returns :meth:`standby`."""
        body = {"count": count}
        return cast(
            dict[str, Any], self.request("PUT", f"/1.0/images/{template}/standby", json=body)
        )

    def start_fork(self, name: str, count: int, *, prefix: str | None = None) -> dict[str, Any]:
        body = {"count": count, "prefix": prefix}
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/fork", json=body))

    def fork(self, name: str, count: int, *, prefix: str | None = None) -> dict[str, Any]:
        """Fork a running VM N times and wait; returns the template and the new VMs."""
        return self._result(self.start_fork(name, count, prefix=prefix))

    # --- snapshots -------------------------------------------------------------------

    def snapshots(self, vm: str) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", f"/1.0/vms/{vm}/snapshots"))

    def snapshot(self, vm: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", f"/1.0/vms/{vm}/snapshots/{name}"))

    def start_snapshot(self, vm: str, name: str, *, memory: bool = False) -> dict[str, Any]:
        body = {"name": name, "memory": memory}
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{vm}/snapshots", json=body))

    def create_snapshot(self, vm: str, name: str, *, memory: bool = False) -> dict[str, Any]:
        """Snapshot a VM and wait; returns the snapshot."""
        return self._result(self.start_snapshot(vm, name, memory=memory))

    def start_restore(self, vm: str, name: str, *, force: bool = False) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request("POST", f"/1.0/vms/{vm}/snapshots/{name}/restore", json={"force": force}),
        )

    def restore_snapshot(self, vm: str, name: str, *, force: bool = False) -> dict[str, Any]:
        """Restore a VM to a snapshot and wait; returns the VM."""
        return self._result(self.start_restore(vm, name, force=force))

    def start_delete_snapshot(self, vm: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("DELETE", f"/1.0/vms/{vm}/snapshots/{name}"))

    def delete_snapshot(self, vm: str, name: str) -> None:
        self._result(self.start_delete_snapshot(vm, name))

    def _result(self, op: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
        return cast(dict[str, Any], self.wait_operation(op["id"], timeout=timeout)["result"])

    # --- pools and volumes -----------------------------------------------------------

    def pools(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/storage/pools"))

    def create_pool(self, name: str, path: str | Path) -> dict[str, Any]:
        body = {"name": name, "path": str(Path(path).absolute())}
        return cast(dict[str, Any], self.request("POST", "/1.0/storage/pools", json=body))

    def delete_pool(self, name: str) -> None:
        self.request("DELETE", f"/1.0/storage/pools/{name}")

    def volumes(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/volumes"))

    def create_volume(
        self, name: str, size: int, *, pool: str = "default", fmt: str = "qcow2"
    ) -> dict[str, Any]:
        body = {"name": name, "size": size, "pool": pool, "format": fmt}
        return cast(dict[str, Any], self.request("POST", "/1.0/volumes", json=body))

    def delete_volume(self, name: str) -> None:
        self.request("DELETE", f"/1.0/volumes/{name}")

    def resize_volume(self, name: str, size: int) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request("POST", f"/1.0/volumes/{name}/resize", json={"size": size}),
        )

    def attach_volume(self, name: str, vm: str) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.request("POST", f"/1.0/volumes/{name}/attach", json={"vm": vm})
        )

    def detach_volume(self, name: str, vm: str) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.request("POST", f"/1.0/volumes/{name}/detach", json={"vm": vm})
        )

    def resize_vm(self, name: str, size: int) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.request("POST", f"/1.0/vms/{name}/resize", json={"size": size})
        )

    # --- VMs --------------------------------------------------------------------------

    def vms(self, *, all_projects: bool = False) -> list[dict[str, Any]]:
        params = {"all_projects": True} if all_projects else None
        return cast(list[dict[str, Any]], self.request("GET", "/1.0/vms", params=params))

    def vm(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", f"/1.0/vms/{name}"))

    def launch(
        self,
        spec: Mapping[str, Any],
        *,
        start: bool = True,
        full: bool = False,
        cold: bool = False,
    ) -> dict[str, Any]:
        body = {**spec, "start": start, "full": full, "cold": cold}
        return cast(dict[str, Any], self.request("POST", "/1.0/vms", json=body, timeout=3600))

    def launch_many(
        self,
        spec: Mapping[str, Any],
        count: int,
        *,
        start: bool = True,
        full: bool = False,
        cold: bool = False,
    ) -> list[dict[str, Any]]:
        """``count`` VMs named NAME-1 … NAME-N (one: NAME), in one request. If one fails,
        those made before it stay and the ApiError's details name them ("launched")."""
        body = {**spec, "count": count, "start": start, "full": full, "cold": cold}
        # As long for each VM as one launch may take.
        timeout = 3600 * count
        return cast(
            list[dict[str, Any]],
            self.request("POST", "/1.0/vms/batch", json=body, timeout=timeout),
        )

    def start(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/start"))

    def stop(self, name: str, *, force: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request(
                "POST",
                f"/1.0/vms/{name}/stop",
                json={"force": force, "timeout": timeout},
                timeout=timeout + 60,
            ),
        )

    def restart(self, name: str, *, force: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.request(
                "POST",
                f"/1.0/vms/{name}/restart",
                json={"force": force, "timeout": timeout},
                timeout=timeout + 60,
            ),
        )

    def pause(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/pause"))

    def resume(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", f"/1.0/vms/{name}/resume"))

    def delete(self, name: str, *, force: bool = False) -> None:
        self.request("DELETE", f"/1.0/vms/{name}", params={"force": force})

    def logs(self, name: str, *, lines: int = 100) -> str:
        try:
            response = self._http.get(f"/1.0/vms/{name}/logs", params={"lines": lines})
        except httpx.ConnectError as exc:
            raise self._unavailable(exc) from exc
        self._decode_error(response)
        return response.text

    @contextmanager
    def follow_logs(
        self, name: str, *, lines: int = 100, idle_timeout: float | None = None
    ) -> Iterator[Iterator[str]]:
        """Stream a VM's serial output as text chunks until the caller stops reading.

        With ``idle_timeout``, raises ``httpx.ReadTimeout`` after that many quiet seconds.
        """
        try:
            with self._http.stream(
                "GET",
                f"/1.0/vms/{name}/logs",
                params={"lines": lines, "follow": True},
                timeout=httpx.Timeout(10.0, read=idle_timeout),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode_error(response)
                yield response.iter_text()
        except httpx.ConnectError as exc:
            raise self._unavailable(exc) from exc

    def boot_count(self, name: str, marker: str) -> int:
        """How many times the boot marker is in the VM's recent serial log."""
        return self.logs(name, lines=100000).count(marker)

    def wait_for_boot(self, name: str, marker: str, *, seen: int = 0, timeout: float) -> None:
        """Follow the serial log until ``marker`` has appeared more than ``seen`` times.

        Raises :class:`TimeoutError` when it does not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        carry, found = "", 0
        try:
            with self.follow_logs(name, lines=100000, idle_timeout=timeout) as chunks:
                for chunk in chunks:
                    text = carry + chunk
                    found += text.count(marker)
                    if found > seen:
                        return
                    # A marker may straddle two chunks: carry the tail over.
                    carry = text[len(text) - len(marker) + 1 :] if len(marker) > 1 else ""
                    if time.monotonic() > deadline:
                        break
        except httpx.ReadTimeout:
            pass
        raise TimeoutError(f"'{name}' printed no boot marker in {timeout:g} s")

    def screenshot(self, name: str) -> bytes:
        """The guest's screen as PNG bytes."""
        try:
            response = self._http.get(f"/1.0/vms/{name}/screenshot", timeout=60)
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise self._unavailable(exc) from exc
        self._check_peer(response)
        self._decode_error(response)
        return response.content

    def _decode_error(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            self._decode(response)

    def websocket(self, path: str, params: Mapping[str, str] | None = None) -> ClientConnection:
        """Open a websocket on hangard (authenticated like every request)."""
        from websockets.sync.client import connect, unix_connect

        query = dict(params or {})
        if self.project:
            query.setdefault("project", self.project)
        target = path + ("?" + str(httpx.QueryParams(query)) if query else "")
        try:
            if self.remote is None:
                return unix_connect(str(self.socket_path), f"ws://hangard{target}", max_size=None)
            url = self.remote.url.rstrip("/").replace("https://", "wss://", 1) + target
            context = self.remote.ssl_context()
            context.sslsocket_class = _PeerRememberingSocket
            connection = connect(
                url,
                ssl=context,
                additional_headers={"Authorization": f"Bearer {self.remote.token}"},
                max_size=None,
            )
            tls = cast(_PeerRememberingSocket, connection.socket)
            try:
                self.remote.check_peer(tls.peer_certificate)
            except HangarError:
                connection.close()
                raise
            return connection
        except OSError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def console(self, name: str) -> Iterator[ClientConnection]:
        """Open the VM's serial console: a websocket carrying raw bytes both ways."""
        with self.websocket(f"/1.0/vms/{name}/console") as connection:
            yield connection
