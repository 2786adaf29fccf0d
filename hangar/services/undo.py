"""The revert stack: every multi-step change records how to undo each step.

If a later step fails, the recorded cleanups run in reverse order, so a failure
halfway leaves nothing behind (no process, file, device or row).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None] | None]


class RevertStack:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Cleanup]] = []

    def push(self, description: str, cleanup: Cleanup) -> None:
        """Record how to undo a step that has just succeeded."""
        self._steps.append((description, cleanup))

    async def revert(self) -> list[str]:
        """Run every cleanup, newest first. A failing cleanup is logged and the rest still run.

        Returns the descriptions of cleanups that failed.
        """
        failed = []
        while self._steps:
            description, cleanup = self._steps.pop()
            try:
                result = cleanup()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("revert step failed: %s", description)
                failed.append(description)
        return failed

    def commit(self) -> None:
        """The change is complete: forget the cleanups."""
        self._steps.clear()


@asynccontextmanager
async def revert_on_error() -> AsyncIterator[RevertStack]:
    stack = RevertStack()
    try:
        yield stack
    except BaseException:
        await stack.revert()
        raise
    stack.commit()
