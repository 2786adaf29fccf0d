"""Hints below the CLI are neutral: they say what to do, never which CLI command or
flag does it (a web UI shows the same hints). The CLI adds its own command lines from
the error's action (hangar.cli.suggest).

Read from the source (ast), as tests/unit/test_layers.py does: every ``hint=`` keyword
and every assignment to ``.hint`` in the layers under the CLI, their string parts
(an f-string's literal text) checked for ``hangar COMMAND`` and ``--flag``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from hangar.cli.main import cli
from hangar.errors import StateConflict
from hangar.services.lifecycle import Action

PACKAGE = Path(__file__).parents[2] / "hangar"
LAYERS = ("services", "api", "state", "spec", "host", "errors.py")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _command_words() -> set[str]:
    words: set[str] = set()
    stack: list[click.Command] = [cli]
    while stack:
        command = stack.pop()
        if isinstance(command, click.Group):
            words |= set(command.commands)
            stack.extend(command.commands.values())
    return words


COMMAND = re.compile(r"\bhangar (" + "|".join(sorted(_command_words())) + r")\b")


def _text(node: ast.expr) -> str:
    """The literal text of a hint expression: its string constants, in order (an
    f-string's placeholders become nothing)."""
    parts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
    return "".join(p for p in parts if isinstance(p, str))


def _hints(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "hint":
            yield node.value.lineno, _text(node.value)
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "hint" for t in targets):
                yield node.lineno, _text(node.value)


def _sources() -> list[Path]:
    found: list[Path] = []
    for layer in LAYERS:
        path = PACKAGE / layer
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def cli_syntax(text: str) -> list[str]:
    return [m.group() for m in (*COMMAND.finditer(text), *FLAG.finditer(text))]


def test_the_scan_finds_what_it_looks_for() -> None:
    # The words come from the CLI itself, and the patterns catch the old hints.
    assert {"stop", "list", "volume", "snapshot", "project"} <= _command_words()
    assert cli_syntax("stop it first: hangar stop ") == ["hangar stop"]
    assert cli_syntax("'hangar volume list' shows them") == ["hangar volume"]
    assert cli_syntax("add --force, or keep it") == ["--force"]
    assert cli_syntax("launch it with --graphics") == ["--graphics"]
    # Plain words about hangar, or a bare option-like word in a host command, are not.
    assert cli_syntax("hangar can build: tiny; hangar never overwrites") == []
    assert cli_syntax("stop the VM first; a copy-on-write layer") == []
    tree = ast.parse('raise Conflict("m", hint=f"stop it first: hangar stop {vm}")\ne.hint = "--x"')
    assert sorted(text for _, text in _hints(tree)) == ["--x", "stop it first: hangar stop "]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_hints_name_no_cli_command_or_flag(path: Path) -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r} ({', '.join(cli_syntax(text))})"
        for line, text in _hints(ast.parse(path.read_text()))
        if cli_syntax(text)
    ]
    assert not found, "hints with CLI syntax (say what to do; the CLI words it):\n" + "\n".join(
        found
    )


@pytest.mark.parametrize("action", list(Action))
def test_state_conflicts_name_actions_in_words(action: Action) -> None:
    # StateConflict builds its message and hint from the lifecycle action's name.
    error = StateConflict("web", action, "stopped", ["running"])
    assert not cli_syntax(error.hint) and not cli_syntax(error.message), error
