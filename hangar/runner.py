"""The one way hangar runs host commands.

Everything that executes a program on the host goes through a
:class:`CommandRunner`, so tests can swap in a recording runner and assert on
the exact argv without touching the host.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hangar.errors import HostCommandFailed


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
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
        """Run ``argv`` to completion.

        Raises :class:`HostCommandFailed` when ``check`` is true and the command
        exits non-zero, cannot be started, or times out.
        """
        ...


class SubprocessRunner:
    """Runs commands for real with :mod:`subprocess`."""

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
        args = [str(a) for a in argv]
        try:
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                input=input_text,
                check=False,
            )
        except FileNotFoundError as exc:
            raise HostCommandFailed(
                args, 127, str(exc), hint=f"install '{args[0]}' (run the README's setup command)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            out = exc.stderr if isinstance(exc.stderr, str) else ""
            raise HostCommandFailed(args, -1, f"timed out after {timeout} s\n{out}") from exc
        result = CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise HostCommandFailed(args, proc.returncode, proc.stderr or proc.stdout)
        return result
