import pytest

from hangar.services.undo import RevertStack, revert_on_error


async def test_reverts_newest_first_and_only_on_error() -> None:
    done: list[str] = []

    async def async_cleanup() -> None:
        done.append("b")

    with pytest.raises(ValueError):
        async with revert_on_error() as undo:
            undo.push("a", lambda: done.append("a"))
            undo.push("b", async_cleanup)
            raise ValueError("step 3 failed")
    assert done == ["b", "a"]

    done.clear()
    async with revert_on_error() as undo:
        undo.push("a", lambda: done.append("a"))
    assert done == []


async def test_a_failing_cleanup_does_not_stop_the_others() -> None:
    done: list[str] = []
    stack = RevertStack()
    stack.push("first", lambda: done.append("first"))

    def broken() -> None:
        raise OSError("cannot")

    stack.push("broken", broken)
    failed = await stack.revert()
    assert failed == ["broken"] and done == ["first"]
