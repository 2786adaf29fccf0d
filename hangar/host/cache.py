"""Remembering the accelerator decision across daemon restarts.

Probing KVM runs QEMU twice; the answer only changes when the kernel, QEMU or
the KVM device changes, so it is cached in a small JSON file keyed by exactly
those. Any doubt (missing, unreadable, other format, other key) means "no
cache": the caller probes again. A cache that cannot be written is logged and
otherwise ignored: hangard must start anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hangar.host.kvm import AccelDecision, ProbeRun

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Bumped whenever the probe guest, its flags or the decision rules change, so a
# verdict reached by older logic is not trusted.
PROBE_REVISION = 1


@dataclass(frozen=True)
class CachedProbe:
    decision: AccelDecision
    probed_at: str
    kvm: ProbeRun | None
    tcg: ProbeRun | None


def device_identity(device: Path) -> dict[str, Any] | None:
    """Identify the KVM device node, or None if it does not exist.

    Device number and inode change when the node is re-created (module reload,
    reboot), ctime when its owner or mode changes; ``accessible`` changes when
    this process gains or loses the right to open it (e.g. joins the kvm group).
    """
    try:
        st = device.stat()
    except OSError:
        return None
    return {
        "path": str(device),
        "rdev": f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
        "ino": st.st_ino,
        "ctime_ns": st.st_ctime_ns,
        "accessible": os.access(device, os.R_OK | os.W_OK),
    }


def cache_key(
    *, kernel_release: str, qemu_binary: str, qemu_version_line: str, kvm_device: dict[str, Any]
) -> dict[str, Any]:
    """The facts a cached verdict depends on (pure). Compared for equality."""
    return {
        "probe_revision": PROBE_REVISION,
        "kernel_release": kernel_release,
        "qemu_binary": qemu_binary,
        # The full first line includes the distribution's package revision,
        # which can change QEMU's behaviour without changing its version.
        "qemu_version": qemu_version_line,
        "kvm_device": kvm_device,
    }


def load_cached(path: Path, key: dict[str, Any]) -> CachedProbe | None:
    """Return the cached verdict for ``key``, or None if there is no valid one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable host probe cache %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    if data.get("key") != key:
        return None
    try:
        decision = data["decision"]
        accelerator = decision["accelerator"]
        if accelerator not in ("kvm", "tcg"):
            raise ValueError(f"unknown accelerator {accelerator!r}")
        runs = data["runs"]
        return CachedProbe(
            decision=AccelDecision(accelerator, str(decision["reason"])),
            probed_at=str(data["probed_at"]),
            kvm=ProbeRun.from_json(runs["kvm"]) if runs.get("kvm") else None,
            tcg=ProbeRun.from_json(runs["tcg"]) if runs.get("tcg") else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring malformed host probe cache %s: %s", path, exc)
        return None


def store(
    path: Path,
    key: dict[str, Any],
    decision: AccelDecision,
    kvm: ProbeRun | None,
    tcg: ProbeRun | None,
    *,
    now: datetime | None = None,
) -> None:
    """Write the verdict atomically (readers see the old or the new file, never half).

    Never raises: a failure is logged, and the next start probes again.
    """
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "probed_at": when,
        "decision": {"accelerator": decision.accelerator, "reason": decision.reason},
        "runs": {
            "kvm": kvm.to_json() if kvm else None,
            "tcg": tcg.to_json() if tcg else None,
        },
    }
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        log.warning("could not write host probe cache %s: %s", path, exc)
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
