"""hangard with timestamps: the stock daemon, with timing wrappers around the steps of a launch.

Run by ``bench/launch.py`` instead of ``.venv/bin/hangard`` (unless ``--no-trace``)
to show where hangar's launch time goes. Nothing in hangar is changed: this
script wraps functions and methods from the outside, then calls
``hangar.api.server.main()`` exactly as the ``hangard`` entry point does.

Every mark is one JSON line ``{"t": CLOCK_MONOTONIC seconds, "ev": "B"|"E"|"I",
"name": ..., ...}`` appended to the file named by ``HANGAR_BENCH_TRACE``.
CLOCK_MONOTONIC is system-wide, so the benchmark compares these times with its
own. A mark costs a few microseconds.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FD: int | None = None
_LOCK = threading.Lock()


def mark(ev: str, name: str, **extra: Any) -> None:
    """Append one event to the trace file (no-op when tracing is off)."""
    if _FD is None:
        return
    record = {"t": time.monotonic(), "ev": ev, "name": name, **extra}
    line = (json.dumps(record, default=str) + "\n").encode()
    with _LOCK:
        os.write(_FD, line)


def _timed(
    name: str,
    fn: Callable[..., Any],
    *,
    container: bool = False,
    label: Callable[..., str] | None = None,
) -> Callable[..., Any]:
    """Wrap ``fn`` (sync or async) so each call marks its begin and end.

    ``container`` calls enclose other marked steps (they are not leaves of the
    timeline); ``label`` derives a more precise name from the call's arguments.
    """

    def name_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return label(*args, **kwargs) if label else name

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            n = name_of(args, kwargs)
            mark("B", n, container=container)
            ok = False
            try:
                result = await fn(*args, **kwargs)
                ok = True
                return result
            finally:
                mark("E", n, container=container, ok=ok)

        return async_wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        n = name_of(args, kwargs)
        mark("B", n, container=container)
        ok = False
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            mark("E", n, container=container, ok=ok)

    return sync_wrapper


def _patch(owner: Any, attr: str, name: str, **kw: Any) -> None:
    setattr(owner, attr, _timed(name, getattr(owner, attr), **kw))


def install() -> None:
    """Wrap the steps of VM creation and start-up, and add an HTTP timing middleware."""
    from qemu.qmp import QMPClient

    from hangar.api import app as app_module
    from hangar.api import server
    from hangar.node import local
    from hangar.services import supervisor, vms
    from hangar.services.qemu import img, process
    from hangar.services.qmp import monitor
    from hangar.services.storage import images
    from hangar.services.vms import lifecycle as vm_lifecycle
    from hangar.state import vms as state_vms

    # Containers: they enclose the leaf steps below.
    _patch(vms.VMService, "create", "service create", container=True)
    _patch(vms.VMService, "_start", "service start", container=True)
    _patch(supervisor.Supervisor, "launch", "supervisor launch", container=True)
    _patch(supervisor.Supervisor, "_watch", "supervisor watch", container=True)

    # Leaves, in the order a launch runs them.
    _patch(images.ImageStore, "get", "image manifest read")
    _patch(vm_lifecycle, "resolve", "resolve")  # VMService.create resolves the spec there
    _patch(vms.VMService, "_check_ports", "port check")
    _patch(img, "create_overlay", "qemu-img create")
    _patch(local, "render_argv", "render argv")  # LocalNode.start renders it
    _patch(process, "spawn", "spawn QEMU via sh")
    # attach: a launch (on the socket hangard handed QEMU); connect: an adoption.
    _patch(monitor.Monitor, "attach", "QMP connect (QEMU starting)")
    _patch(monitor.Monitor, "connect", "QMP connect (QEMU starting)")
    _patch(monitor.Monitor, "status", "QMP query-status")
    _patch(monitor.Monitor, "cont", "QMP cont")
    _patch(vms.VMService, "get", "build VM view")
    _patch(state_vms.VMRepository, "find", "db find")
    _patch(state_vms.VMRepository, "get", "db get")
    _patch(state_vms.VMRepository, "list", "db list")
    _patch(state_vms.VMRepository, "insert", "db insert")
    _patch(
        state_vms.VMRepository,
        "set_state",
        "db set_state",
        label=lambda _self, _vm_id, state, *_a, **_k: f"db set_state {state}",
    )

    # Each QMP connect attempt (hangar retries until QEMU answers).
    original_connect = QMPClient.connect

    async def connect(self: Any, address: Any, *args: Any, **kwargs: Any) -> None:
        mark("I", "qmp attempt")
        try:
            await original_connect(self, address, *args, **kwargs)
        except BaseException:
            mark("I", "qmp attempt failed")
            raise
        # When QEMU created its QMP socket (file ctime, realtime clock -> monotonic).
        try:
            ctime = Path(str(address)).stat().st_ctime
            mark("I", "qmp socket created", at=ctime - time.time() + time.monotonic())
        except OSError:
            pass
        mark("I", "qmp attempt ok")

    QMPClient.connect = connect  # type: ignore[method-assign]

    original_create_app = app_module.create_app

    def create_app(platform: Any) -> Any:
        app = original_create_app(platform)
        app.add_middleware(_HttpTiming)
        return app

    # hangard's main() looks create_app up in its own module when it runs.
    setattr(server, "create_app", create_app)  # noqa: B010


class _HttpTiming:
    """Pure ASGI middleware: marks when a request arrives and when its response is sent."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        name = f"http {scope.get('method')} {scope.get('path')}"
        mark("B", name, container=True)

        async def timed_send(message: Any) -> None:
            if message.get("type") == "http.response.start":
                mark("I", f"{name} response start")
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                mark("E", name, container=True)

        await self.app(scope, receive, timed_send)


def main() -> None:
    global _FD
    path = os.environ.get("HANGAR_BENCH_TRACE")
    if path:
        _FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        install()
    from hangar.api.server import main as hangard_main

    hangard_main()


if __name__ == "__main__":
    main()
