"""The VM power-state machine: which action is allowed in which state."""

from __future__ import annotations

from enum import StrEnum

from hangar.errors import StateConflict


class PowerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    CRASHED = "crashed"


class Action(StrEnum):
    START = "start"
    STOP = "stop"
    FORCE_STOP = "force stop"
    PAUSE = "pause"
    RESUME = "resume"
    RESTART = "restart"
    DELETE = "delete"
    FORCE_DELETE = "force delete"


S = PowerState
ALLOWED: dict[Action, tuple[PowerState, ...]] = {
    Action.START: (S.STOPPED, S.CRASHED),
    Action.STOP: (S.RUNNING, S.PAUSED),
    # A force stop may cut short an ACPI stop that is taking too long.
    Action.FORCE_STOP: (S.RUNNING, S.PAUSED, S.STARTING, S.STOPPING),
    Action.PAUSE: (S.RUNNING,),
    Action.RESUME: (S.PAUSED,),
    Action.RESTART: (S.RUNNING, S.PAUSED),
    Action.DELETE: (S.STOPPED, S.CRASHED),
    Action.FORCE_DELETE: tuple(PowerState),
}


def check(vm: str, action: Action, current: PowerState) -> None:
    """Raise :class:`StateConflict` naming the current and allowed states unless allowed."""
    allowed = ALLOWED[action]
    if current not in allowed:
        raise StateConflict(vm, action.value, current.value, [s.value for s in allowed])
