"""The CLI's own wording of what an error suggests: an action becomes a command line.

Services and the API give a neutral hint ("stop the VM first") and, beside it, an
action with its parameters in the error's details (hangar.errors.Action). Only here
do those become ``hangar`` commands, so a web UI showing the same error never sees
CLI syntax. Pure: text in, text out.

Names in the commands come from the server (a VM's, a project's, ...): each is quoted
for a shell, and every line goes through :func:`hangar.cli.safe.shown` before it is
printed, so a name can neither forge terminal output nor be Rich markup.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hangar.cli.safe import shown

Details = Mapping[str, Any]


def _q(value: Any) -> str:
    return shlex.quote(str(value))


def _in_project(details: Details, words: str) -> str:
    """``hangar [--project P] WORDS``: the project's when the details name one."""
    project = details.get("project")
    return f"hangar --project {_q(project)} {words}" if project else f"hangar {words}"


def _forced(argv: Sequence[str]) -> str:
    """The command the user ran, again with --force (its words quoted as typed)."""
    return shlex.join(["hangar", *argv, "--force"])


def _snapshot_first(details: Details) -> str:
    memory = " --memory" if details.get("memory") else ""
    return f"hangar snapshot create {_q(details['vm'])} NAME{memory}"


def _quota(details: Details) -> str:
    key = str(details.get("limit", "KEY")).replace("_", "-")
    return f"hangar project set {_q(details['project'])} {_q(key + '=')}..."


# Each known action: its lines, given the error's details and the user's argv. A line
# is "try: COMMAND" or says who may run it. A KeyError (details without a parameter
# the action needs) shows no line, as for an unknown action.
_LINES: dict[str, Callable[[Details, Sequence[str]], list[str]]] = {
    "stop-vm": lambda d, _: [f"try: hangar stop {_q(d['vm'])}"],
    "show-vm": lambda d, _: [f"try: hangar info {_q(d['vm'])}"],
    "force": lambda _, argv: [f"try: {_forced(argv)}"],
    "force-or-snapshot": lambda d, argv: [
        f"try: {_forced(argv)}",
        f"or keep it first: {_snapshot_first(d)}",
    ],
    "detach-volume": lambda d, _: [f"try: hangar volume detach {_q(d['volume'])} {_q(d['vm'])}"],
    "list-vms": lambda d, _: [f"try: {_in_project(d, 'list')}"],
    "list-volumes": lambda d, _: [f"try: {_in_project(d, 'volume list')}"],
    "list-networks": lambda d, _: [f"try: {_in_project(d, 'network list')}"],
    "list-snapshots": lambda d, _: [f"try: hangar snapshot list {_q(d['vm'])}"],
    "list-images": lambda _d, _a: ["try: hangar image list"],
    "list-forwards": lambda _d, _a: ["try: hangar forward list"],
    "list-firewall-rules": lambda _d, _a: ["try: hangar firewall list"],
    "list-projects": lambda _d, _a: ["try: hangar project list"],
    "list-tokens": lambda _d, _a: ["try: hangar token list"],
    "list-pools": lambda _d, _a: ["try: hangar storage pool list"],
    "build-image": lambda d, _: [f"try: hangar image build {_q(d.get('image', 'tiny'))}"],
    "delete-image": lambda d, _: [f"try: hangar image delete {_q(d['image'])}"],
    "import-image": lambda _d, _a: ["try: hangar image import FILE"],
    "create-token": lambda d, _: [
        "an admin runs: hangar token create"
        + (f" --project {_q(d['project'])}" if d.get("project") else " --project P")
        + " --role viewer|operator|admin"
    ],
    "raise-quota": lambda d, _: [f"a host administrator runs: {_quota(d)}"],
    "set-uplinks": lambda d, _: [
        f"a host administrator runs: hangar project uplinks {_q(d['project'])} IFACE..."
    ],
    "delete-project": lambda d, _: [
        f"a host administrator runs: hangar project delete {_q(d['project'])}"
    ],
}


def commands(action: str, details: Details, argv: Sequence[str] = ()) -> list[str]:
    """The plain lines the CLI offers for ``action`` (none for an unknown one: a newer
    server's, or none at all). ``argv``: the arguments the user ran hangar with."""
    make = _LINES.get(action)
    if make is None:
        return []
    try:
        return make(details, argv)
    except KeyError:
        return []


def render(action: str, details: Details, argv: Sequence[str] = ()) -> list[str]:
    """:func:`commands`, each line safe to print with Rich (controls made visible,
    markup escaped)."""
    return [shown(line) for line in commands(action, details, argv)]
