"""A CommandRunner that records every argv instead of (or as well as) running it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hangar.errors import HostCommandFailed
from hangar.runner import CommandResult

Effect = Callable[[Sequence[str]], CommandResult | None]


class RecordingRunner:
    """Records commands; answers from ``responses`` (matched on the argv prefix).

    A response can be a ``CommandResult`` or a function of the argv (to act out
    side effects such as creating a file); unmatched commands succeed silently.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.responses: list[tuple[tuple[str, ...], Effect]] = []

    def on(self, prefix: Sequence[str], effect: Effect) -> None:
        self.responses.append((tuple(prefix), effect))

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
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        result = CommandResult(args, 0, "", "")
        for prefix, effect in self.responses:
            if args[: len(prefix)] == prefix:
                result = effect(args) or result
                break
        if check and result.returncode != 0:
            raise HostCommandFailed(args, result.returncode, result.stderr)
        return result

    def commands(self, program: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c and c[0] == program]
