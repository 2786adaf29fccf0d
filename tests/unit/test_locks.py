"""Locks by typed key (state/locks.py)."""

from __future__ import annotations

import asyncio

from hangar.state.locks import LocalLocks, ProjectKey, VMKey


def test_a_key_names_one_lock_and_different_kinds_never_share() -> None:
    locks = LocalLocks()
    assert locks[ProjectKey("alpha")] is locks[ProjectKey("alpha")]
    assert locks[ProjectKey("alpha")] is not locks[ProjectKey("beta")]
    # A project and a VM that happen to share a name are different things.
    assert locks[ProjectKey("alpha")] is not locks[VMKey("alpha")]
    # A VM id as a plain string (the transition) is that VM's key.
    assert locks["0123abcd"] is locks[VMKey("0123abcd")]


def test_discard_forgets_a_lock() -> None:
    locks = LocalLocks()
    first = locks[VMKey("gone")]
    assert VMKey("gone") in locks
    locks.discard("gone")
    assert VMKey("gone") not in locks
    assert locks[VMKey("gone")] is not first
    locks.discard(ProjectKey("never-made"))


async def test_holders_of_one_key_run_one_at_a_time() -> None:
    locks = LocalLocks()
    inside: list[str] = []
    peak = 0

    async def hold(who: str) -> None:
        nonlocal peak
        async with locks[ProjectKey("p")]:
            inside.append(who)
            peak = max(peak, len(inside))
            await asyncio.sleep(0)
            inside.remove(who)

    await asyncio.gather(*(hold(str(n)) for n in range(5)))
    assert peak == 1
