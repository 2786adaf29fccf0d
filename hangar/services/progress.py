"""How long-running service work reports progress (an operation's, or nobody's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Reporter(Protocol):
    """Takes a progress message, percent done (0-100) and bytes done, each optional.

    :meth:`hangar.services.operations.Operation.progress` is one; it raises when
    the operation was cancelled, which stops the work at that point.
    """

    def __call__(
        self, message: str = "", *, percent: float | None = None, nbytes: int | None = None
    ) -> None: ...


def quiet(message: str = "", *, percent: float | None = None, nbytes: int | None = None) -> None:
    """The reporter of work nobody watches."""


def span(report: Reporter, message: str, start: float, end: float) -> Callable[[float], None]:
    """A percent callback for one step that maps its 0-100 onto ``start..end`` of the whole."""

    def step(percent: float) -> None:
        report(message, percent=start + (end - start) * max(0.0, min(100.0, percent)) / 100)

    return step
