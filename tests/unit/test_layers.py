"""The shape of the code: imports point downward only, no import cycles, and a CLI
that starts without the server's modules or pydantic.

Read from the source (ast), so a function-level import counts: hiding a cycle inside
a function does not make it go away. Imports under ``if TYPE_CHECKING:`` do not run
and are not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "hangar"

# What each layer may import from hangar besides itself (the layer is the first part
# of the module's name under hangar). Lower layers name fewer.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "names": {"errors"},
    "paths": {"errors"},
    "runner": {"errors"},
    "certs": {"errors"},
    "spec": {"errors", "names"},
    "state": {"errors", "names", "paths", "spec"},
    "host": {"errors", "runner", "spec"},
    "client": {"errors", "certs", "paths"},
    "cli": {"errors", "certs", "paths", "client", "spec.units", "spec.forwards"},
}
# Never imported by these layers, whatever else they use.
FORBIDDEN: dict[str, set[str]] = {
    "api": {"state", "cli", "client"},
    "services": {"api", "cli", "client"},
}


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            names |= set().union(*(_imports(n) for n in node.orelse)) if node.orelse else set()
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in modules() else node.module)
        names |= _imports(node)
    return names


@cache
def graph() -> dict[str, frozenset[str]]:
    out = {}
    for name, path in modules().items():
        deps = {d for d in _imports(ast.parse(path.read_text())) if d in modules()}
        out[name] = frozenset(d for d in deps if d != name and d != "hangar")
    return out


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph()[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph()):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    # A reader that found nothing would pass every rule below.
    assert "hangar.client.client" in graph()["hangar.cli.app"]
    assert "hangar.spec.vm" in graph()["hangar.state.vms"]


def test_there_is_no_import_cycle() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_lies_under_it(layer: str) -> None:
    allowed = ALLOWED[layer]
    wrong = []
    for module, deps in graph().items():
        if _layer(module) != layer:
            continue
        for dep in deps:
            dep_layer = _layer(dep)
            if dep_layer == layer or dep_layer in allowed or dep.removeprefix("hangar.") in allowed:
                continue
            wrong.append(f"{module} -> {dep}")
    assert wrong == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_reaches_up_or_past_its_service(layer: str) -> None:
    wrong = [
        f"{module} -> {dep}"
        for module, deps in graph().items()
        if _layer(module) == layer
        for dep in deps
        if _layer(dep) in FORBIDDEN[layer]
    ]
    assert wrong == []


def test_the_cli_starts_without_the_server_or_pydantic() -> None:
    """Every command's module is loaded at start (click registers them): none may
    pull in pydantic, websockets, the server's layers or cryptography."""
    probe = (
        "import sys, hangar.cli.main\n"
        "heavy = ('pydantic', 'websockets', 'cryptography', 'fastapi', 'hangar.services',"
        " 'hangar.api', 'hangar.state', 'hangar.host', 'hangar.spec.vm')\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


# QEMU-, QMP-, agent- and process-level code: what only a Node may use.
QEMU_LEVEL = (
    "hangar.services.qemu",
    "hangar.services.qmp",
    "hangar.services.qga",
    "hangar.services.supervisor",
    "hangar.host.sockets",
)
# Services that still reach QEMU themselves instead of asking the Node (through
# VMService.local); each is to move behind Node methods. The list may only shrink.
NOT_YET_BEHIND_THE_NODE = {
    "hangar.services.clones",
    "hangar.services.guests",  # the guest agent (exec, files, info)
    "hangar.services.guest_files",
    "hangar.services.templates.identity",
    "hangar.services.templates.ram",
    "hangar.services.templates.reseed",
    "hangar.services.snapshots.service",
    "hangar.services.templates.standby",
    "hangar.services.templates.warm",
    "hangar.services.transfer",
}


# The Node's own parts, which DESIGN.md draws under node/ (they still live under
# services/): QEMU, QMP, the agent, supervision, host networking and storage.
NODE_PARTS = (*QEMU_LEVEL, "hangar.node", "hangar.services.net.", "hangar.services.storage.")


def _above_the_node(module: str) -> bool:
    if module.startswith(NODE_PARTS):
        return False
    return module.startswith(("hangar.services.", "hangar.api."))


def test_nothing_above_the_node_touches_qemu() -> None:
    offenders = {
        module
        for module, deps in graph().items()
        if _above_the_node(module) and any(d.startswith(QEMU_LEVEL) for d in deps)
    }
    assert offenders - NOT_YET_BEHIND_THE_NODE == set(), "ask the Node (hangar/node/base.py)"
    # A module moved behind the Node leaves the list, so it cannot slip back.
    assert NOT_YET_BEHIND_THE_NODE - offenders == set()
