"""One error tree for all of hangar.

Every error carries a message that says what happened and a hint that says what
to do. The tree splits in two:

* :class:`NothingChanged` — the request was refused before anything was done
  (bad input, conflict, not found). Safe to fix and retry.
* :class:`BrokeHalfway` — something failed while work was under way (a host
  command, QEMU). hangar reverts what it did, but the caller should know.

Each class maps to a CLI exit code and an HTTP status, so the API and the CLI
never invent their own.

A hint is neutral: it says what to do in words any client can show (the CLI, a web
UI), never a CLI command or flag. What a client could offer to do next travels beside
it as a :class:`NextStep` (its parameters in ``details``); each client phrases it in its
own terms (the CLI as a command line, see hangar/cli/suggest.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar


class NextStep(StrEnum):
    """What the caller can do next, machine-readable. The comment after each names the
    keys of ``details`` it reads. A client that does not know an action (a newer
    server's) shows the hint alone, so adding one is always safe."""

    STOP_VM = "stop-vm"  # vm
    SHOW_VM = "show-vm"  # vm
    FORCE = "force"  # (repeat the same request with force)
    FORCE_OR_SNAPSHOT = "force-or-snapshot"  # vm, memory: repeat with force, or snapshot first
    DETACH_VOLUME = "detach-volume"  # volume, vm
    LIST_VMS = "list-vms"  # project (optional)
    LIST_VOLUMES = "list-volumes"  # project (optional)
    LIST_NETWORKS = "list-networks"  # project (optional)
    LIST_SNAPSHOTS = "list-snapshots"  # vm
    LIST_IMAGES = "list-images"
    LIST_FORWARDS = "list-forwards"
    LIST_FIREWALL = "list-firewall-rules"
    LIST_PROJECTS = "list-projects"
    LIST_TOKENS = "list-tokens"
    LIST_POOLS = "list-pools"
    BUILD_IMAGE = "build-image"  # image (optional: one the host can build)
    DELETE_IMAGE = "delete-image"  # image
    IMPORT_IMAGE = "import-image"
    CREATE_TOKEN = "create-token"  # project (optional)
    RAISE_QUOTA = "raise-quota"  # project, limit (a quota key such as max_disk)
    SET_UPLINKS = "set-uplinks"  # project (a host administrator's action)
    DELETE_PROJECT = "delete-project"  # project (a host administrator's action)


class HangarError(Exception):
    """Root of every error hangar raises on purpose."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        details: dict[str, Any] | None = None,
        action: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})
        # A NextStep value, or "" for none; a plain str so that a client keeps an
        # action it does not know (it then shows the hint alone).
        self.action = str(action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.kind,
            "message": self.message,
            "hint": self.hint,
            "action": self.action or None,
            "details": self.details,
        }

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- nothing was changed -------------------------------------------------------------


class NothingChanged(HangarError):
    """The request was refused; nothing on the host was touched."""

    http_status = 400
    exit_code = 2
    kind = "refused"


class InvalidInput(NothingChanged):
    http_status = 400
    kind = "invalid-input"


class UnsafeImage(InvalidInput):
    """An image from outside refers to something beyond itself, or is not what it claims."""

    kind = "unsafe-image"


class NotFound(NothingChanged):
    http_status = 404
    exit_code = 3
    kind = "not-found"


class Conflict(NothingChanged):
    http_status = 409
    exit_code = 4
    kind = "conflict"


class StateConflict(Conflict):
    """A lifecycle action is not allowed in the VM's current state."""

    kind = "state-conflict"

    def __init__(self, vm: str, action: str, current: str, allowed: Sequence[str]):
        allowed_text = ", ".join(allowed)
        super().__init__(
            f"cannot {action} VM '{vm}': it is {current}",
            hint=f"'{action}' needs the VM to be {allowed_text}",
            details={"vm": vm, "action": action, "state": current, "allowed": list(allowed)},
        )


class ResourceLimit(NothingChanged):
    """The request asks for more than the host (or later, a quota) allows."""

    http_status = 422
    exit_code = 5
    kind = "resource-limit"


# --- broke halfway -------------------------------------------------------------------


class BrokeHalfway(HangarError):
    """Work was under way when something failed. hangar reverted what it could."""

    http_status = 500
    exit_code = 10
    kind = "failed"


class HostCommandFailed(BrokeHalfway):
    kind = "host-command-failed"

    def __init__(self, argv: Sequence[str], returncode: int, output: str, *, hint: str = ""):
        cmd = " ".join(argv)
        tail = output.strip()[-2000:]
        super().__init__(
            f"host command failed with exit code {returncode}: {cmd}"
            + (f"\n{tail}" if tail else ""),
            hint=hint,
            details={"argv": list(argv), "returncode": returncode, "output": tail},
        )
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


class QemuFailed(BrokeHalfway):
    kind = "qemu-failed"


class DaemonUnavailable(HangarError):
    """The CLI could not reach hangard."""

    exit_code = 6
    kind = "daemon-unavailable"


class QuotaExceeded(ResourceLimit):
    """A project's quota would be exceeded; the message names the limit and the use."""

    kind = "quota-exceeded"


class Unauthenticated(NothingChanged):
    """No token, or one hangard does not know (or that was revoked)."""

    http_status = 401
    exit_code = 7
    kind = "unauthenticated"


class BodyTooLarge(InvalidInput):
    """A request body over the route's limit (it was not read past the limit)."""

    http_status = 413
    kind = "body-too-large"


class RequestTimeout(InvalidInput):
    """The client stopped sending its request body."""

    http_status = 408
    kind = "request-timeout"


class Forbidden(NothingChanged):
    """The token's role does not allow this action in its project."""

    http_status = 403
    exit_code = 7
    kind = "forbidden"


class CertificateChanged(HangarError):
    """A remote presented another certificate than the one trusted when it was added."""

    exit_code = 8
    kind = "certificate-changed"
