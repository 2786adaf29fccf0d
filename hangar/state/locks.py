"""Locks by typed key: what a service holds while it changes something others read.

A key names what it guards (``ProjectKey("alpha")``), not a string others must
spell the same way. :class:`LocalLocks` is one process's asyncio locks; a cluster
will add locks leased in etcd behind the same :class:`Locks` shape.

Transition: VM ids as plain strings are still accepted as :class:`VMKey` (nine
modules take ``vms.locks[record.id]``), and so are the ``"name:..."`` keys that
guard a VM name while it is being taken; the next step turns them into keys too.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True)
class ProjectKey:
    """A project's networks' address allocation and its quota-limited launches."""

    name: str


@dataclass(frozen=True)
class VMKey:
    """One VM: its files, its QEMU, its row."""

    id: str


LockKey: TypeAlias = ProjectKey | VMKey


class Locks(Protocol):
    def __getitem__(self, key: LockKey | str) -> AbstractAsyncContextManager[object]:
        """The lock of ``key``: ``async with locks[key]:``."""
        ...

    def discard(self, key: LockKey | str) -> None:
        """Forget ``key``'s lock (what it guarded is gone)."""
        ...


def _typed(key: LockKey | str) -> LockKey:
    return VMKey(key) if isinstance(key, str) else key


class LocalLocks:
    """One :class:`asyncio.Lock` per key, made on first use, in this process."""

    def __init__(self) -> None:
        self._locks: dict[LockKey, asyncio.Lock] = {}

    def __getitem__(self, key: LockKey | str) -> asyncio.Lock:
        typed = _typed(key)
        lock = self._locks.get(typed)
        if lock is None:
            lock = self._locks[typed] = asyncio.Lock()
        return lock

    def discard(self, key: LockKey | str) -> None:
        self._locks.pop(_typed(key), None)

    def __contains__(self, key: LockKey | str) -> bool:
        return _typed(key) in self._locks


def _are_locks(locks: LocalLocks) -> Locks:
    return locks  # mypy checks that LocalLocks implements Locks
