import pytest

from hangar.errors import StateConflict
from hangar.services.lifecycle import ALLOWED, Action, PowerState, check


def test_every_action_has_rules() -> None:
    assert set(ALLOWED) == set(Action)


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (Action.START, PowerState.STOPPED),
        (Action.START, PowerState.CRASHED),
        (Action.STOP, PowerState.RUNNING),
        (Action.STOP, PowerState.PAUSED),
        (Action.PAUSE, PowerState.RUNNING),
        (Action.RESUME, PowerState.PAUSED),
        (Action.FORCE_STOP, PowerState.STOPPING),
        (Action.DELETE, PowerState.STOPPED),
        (Action.FORCE_DELETE, PowerState.RUNNING),
    ],
)
def test_allowed(action: Action, state: PowerState) -> None:
    check("vm", action, state)


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (Action.START, PowerState.RUNNING),
        (Action.STOP, PowerState.STOPPED),
        (Action.PAUSE, PowerState.PAUSED),
        (Action.RESUME, PowerState.RUNNING),
        (Action.DELETE, PowerState.RUNNING),
        (Action.RESTART, PowerState.STOPPED),
    ],
)
def test_refused_names_current_and_allowed(action: Action, state: PowerState) -> None:
    with pytest.raises(StateConflict) as info:
        check("web", action, state)
    err = info.value
    assert f"it is {state.value}" in err.message
    assert err.details["allowed"] == [s.value for s in ALLOWED[action]]
    assert all(s in err.hint for s in err.details["allowed"])
    assert err.http_status == 409
