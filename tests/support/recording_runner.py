"""Command runners for tests: they record every call and answer from a script.

:class:`ScriptedRunner` is the base: subclasses (or a ``respond`` function)
decide each answer from the call, so a fake only writes what differs.
:class:`RecordingRunner` answers by argv prefix and enforces ``check`` like the
real runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import HostCommandFailed
from hangar.runner import CommandResult


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    check: bool
    timeout: float | None
    cwd: Path | None
    env: Mapping[str, str] | None
    input_text: str | None

    def ok(self, stdout: str = "", stderr: str = "", returncode: int = 0) -> CommandResult:
        return CommandResult(self.argv, returncode, stdout, stderr)


class ScriptedRunner:
    """Records calls; ``respond(call)`` gives each answer. Does not apply ``check`` itself."""

    def __init__(self, respond: Callable[[Call], CommandResult] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self._respond = respond

    def respond(self, call: Call) -> CommandResult:
        if self._respond is None:
            return call.ok()
        return self._respond(call)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
    ) -> CommandResult:
        call = Call(tuple(str(a) for a in argv), check, timeout, cwd, env, input_text)
        self.calls.append(call.argv)
        return self.respond(call)

    def commands(self, program: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c and c[0] == program]


Effect = Callable[[Sequence[str]], CommandResult | None]


class RecordingRunner(ScriptedRunner):
    """Answers from ``on(prefix, effect)`` rules (first match); unmatched commands succeed.

    An effect may act out side effects (create a file) and return None for success.
    """

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[tuple[tuple[str, ...], Effect]] = []

    def on(self, prefix: Sequence[str], effect: Effect) -> None:
        self.responses.append((tuple(prefix), effect))

    def respond(self, call: Call) -> CommandResult:
        result = call.ok()
        for prefix, effect in self.responses:
            if call.argv[: len(prefix)] == prefix:
                result = effect(call.argv) or result
                break
        if call.check and result.returncode != 0:
            raise HostCommandFailed(call.argv, result.returncode, result.stderr)
        return result
