"""The one way hangar runs host commands.

Everything that executes a program on the host goes through a
:class:`CommandRunner`, so tests can swap in a recording runner and assert on
the exact argv without touching the host.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
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
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion.

        ``on_output`` gets the command's standard output as it arrives (chunks, not
        lines: progress meters redraw with carriage returns). If it raises, the
        command is killed and the exception passes through: that is how a cancelled
        operation stops a long conversion.

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
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        if on_output is not None:
            return _streamed(args, check, timeout, cwd, env, on_output)
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


def _streamed(
    args: list[str],
    check: bool,
    timeout: float | None,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    on_output: Callable[[str], None],
) -> CommandResult:
    """Run ``args`` feeding its stdout to ``on_output``; stderr is kept for errors."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise HostCommandFailed(
            args, 127, str(exc), hint=f"install '{args[0]}' (run the README's setup command)"
        ) from exc
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    err = bytearray()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            sel.register(proc.stderr, selectors.EVENT_READ)
            while sel.get_map():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise HostCommandFailed(
                        args, -1, f"timed out after {timeout} s\n{err.decode(errors='replace')}"
                    )
                for key, _ in sel.select(wait):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.fileobj is proc.stderr:
                        err += chunk
                    else:
                        text = chunk.decode(errors="replace")
                        out.append(text)
                        on_output(text)
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    result = CommandResult(tuple(args), proc.returncode, "".join(out), err.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise HostCommandFailed(args, proc.returncode, result.stderr or result.stdout)
    return result
