"""A key-value store with revisions, shaped after etcd's v3 API.

One global revision counter: every commit that changes something makes the next
revision, and each key remembers the revision that created it and the one that
last modified it (``create_revision``, ``mod_revision``). Writers compare a key's
``mod_revision`` to the one they read (0: the key must not exist) and the store
applies their writes only if every compare holds, all of them or none; that is
how etcd's ``txn`` works, so an etcd client can implement :class:`Store` one call
to one call. Watchers get every change after a revision, in revision order; the
store keeps a bounded history, and a watcher that asks for revisions older than
that gets :class:`Compacted` (then it lists again and watches from the listing's
revision, as an etcd client does).

Values are JSON (what etcd stores, as bytes). :class:`Typed` reads and writes
pydantic models over a key prefix.

:class:`MemoryStore` lives here (component tests); ``state/sqlite_store.py`` holds
:class:`~hangar.state.sqlite_store.SqliteStore`, hangard's.
"""

from __future__ import annotations

import abc
import asyncio
import copy
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from pydantic import BaseModel

from hangar.errors import Conflict, HangarError, InvalidInput

Json: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None

# How many revisions of changes a store keeps for watchers resuming from the past.
DEFAULT_HISTORY = 1000


class RevisionConflict(Conflict):
    """A compare of a commit failed: someone else wrote one of its keys first.

    Nothing was written. The writer reads again and retries (or gives up)."""

    kind = "revision-conflict"

    def __init__(self, key: str, expected: int, actual: int):
        super().__init__(
            f"'{key}' changed meanwhile (expected revision {expected}, found {actual})",
            hint="read it again and retry",
            details={"key": key, "expected": expected, "actual": actual},
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class Compacted(HangarError):
    """A watcher asked for changes older than the store's history."""

    kind = "compacted"

    def __init__(self, after: int, compacted: int):
        super().__init__(
            f"the changes after revision {after} are no longer kept (history starts after "
            f"revision {compacted})",
            hint="list again and watch from the listing's revision",
            details={"after": after, "compacted": compacted},
        )
        self.after = after
        self.compacted = compacted


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Versioned(Generic[T]):
    key: str
    value: T
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Listing(Generic[T]):
    """Keys under a prefix, in key order, as of ``revision`` (watch from there)."""

    items: list[Versioned[T]]
    revision: int


@dataclass(frozen=True)
class Compare:
    """Holds when ``key``'s mod revision is ``mod_revision`` (0: the key does not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: Json


@dataclass(frozen=True)
class Delete:
    key: str


Op: TypeAlias = Put | Delete


class EventKind(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    """One key changed at ``revision`` (its value is None for a delete)."""

    kind: EventKind
    key: str
    value: Json
    revision: int


class Store(Protocol):
    """What services may ask of a store. Every method may run on another host (etcd)."""

    async def revision(self) -> int: ...

    async def get(self, key: str) -> Versioned[Json] | None: ...

    async def list(self, prefix: str) -> Listing[Json]: ...

    async def put(self, key: str, value: Json, expected_revision: int | None) -> int:
        """Write ``key`` if its mod revision is ``expected_revision`` (0 or None: if it
        does not exist); returns the new revision. Raises :class:`RevisionConflict`."""
        ...

    async def delete(self, key: str, expected_revision: int) -> int: ...

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        """All of ``ops`` if every compare holds, else none (:class:`RevisionConflict`).
        Returns the store's revision after it."""
        ...

    def watch(self, prefix: str, after: int) -> AsyncIterator[Event]:
        """Every change under ``prefix`` with a revision above ``after``, in order, then
        each new one as it commits. Raises :class:`Compacted` when ``after`` is older
        than the history kept."""
        ...


def _dumped(value: Json) -> Json:
    # A copy through JSON: what etcd stores are bytes, so no caller may keep a
    # reference into the store (and a value that is not JSON fails here, at write).
    return json.loads(json.dumps(value))  # type: ignore[no-any-return]


class RevisionedStore(abc.ABC):
    """The commit rules and the watch loop, shared by the local stores.

    Commits run on the event loop (the methods are coroutines). Each commit hands
    its changes to every open watcher's queue at once, as etcd streams them to a
    connected watcher: a watcher the loop has not run for a while is behind, not
    compacted. (The queues are unbounded; etcd cancels a watcher that lags too far.
    Close a watch you stop reading, e.g. with ``contextlib.aclosing``.)"""

    def __init__(self, history: int) -> None:
        if history < 1:
            raise ValueError("a store keeps at least its last revision")
        self._watchers: set[tuple[str, asyncio.Queue[Event]]] = set()

    # --- what a store keeps -------------------------------------------------------

    @abc.abstractmethod
    def _revision(self) -> int: ...

    @abc.abstractmethod
    def _compacted(self) -> int:
        """The newest revision whose changes are no longer kept."""

    @abc.abstractmethod
    def _get(self, key: str) -> Versioned[Json] | None: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> Listing[Json]: ...

    @abc.abstractmethod
    def _apply(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        """Check ``compares`` and apply ``ops`` atomically (see :func:`check_compares`);
        the revision after it (unchanged when nothing changed)."""

    @abc.abstractmethod
    def _history(self, prefix: str, after: int) -> list[Event]:
        """The kept changes under ``prefix`` above revision ``after``, in order."""

    # --- Store --------------------------------------------------------------------

    async def revision(self) -> int:
        return self._revision()

    async def get(self, key: str) -> Versioned[Json] | None:
        return self._get(key)

    async def list(self, prefix: str) -> Listing[Json]:
        return self._list(prefix)

    async def put(self, key: str, value: Json, expected_revision: int | None) -> int:
        return await self.commit([Compare(key, expected_revision or 0)], [Put(key, value)])

    async def delete(self, key: str, expected_revision: int) -> int:
        return await self.commit([Compare(key, expected_revision)], [Delete(key)])

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            # As etcd ("duplicate key given in txn request"): one change per key and revision.
            raise InvalidInput("a commit changes each key at most once")
        ops = [Put(op.key, _dumped(op.value)) if isinstance(op, Put) else op for op in ops]
        before = self._revision()
        revision = self._apply(compares, ops)
        if revision != before and self._watchers:
            changes = self._history("", before)
            for prefix, queue in self._watchers:
                for event in changes:
                    if event.key.startswith(prefix):
                        queue.put_nowait(event)
        return revision

    async def watch(self, prefix: str, after: int) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        entry = (prefix, queue)
        # Registered, checked and read with no await between: each change is either in
        # the history read or, newer than ``current``, in the queue.
        self._watchers.add(entry)
        try:
            compacted = self._compacted()
            if after < compacted:
                raise Compacted(after, compacted)
            current = self._revision()
            for event in self._history(prefix, after):
                yield event
            while True:
                event = await queue.get()
                if event.revision > current:
                    yield event
        finally:
            self._watchers.discard(entry)


def check_compares(compares: Sequence[Compare], mod_revision_of: dict[str, int]) -> None:
    for compare in compares:
        actual = mod_revision_of.get(compare.key, 0)
        if actual != compare.mod_revision:
            raise RevisionConflict(compare.key, compare.mod_revision, actual)


class MemoryStore(RevisionedStore):
    """A store in a dict, for tests: the same rules as :class:`SqliteStore`."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history)
        self._keys: dict[str, Versioned[Json]] = {}
        self._events: deque[Event] = deque()
        self._rev = 1  # etcd's first revision: an empty store
        self._floor = 1
        self._keep = history

    def _revision(self) -> int:
        return self._rev

    def _compacted(self) -> int:
        return self._floor

    def _get(self, key: str) -> Versioned[Json] | None:
        item = self._keys.get(key)
        return copy.deepcopy(item)

    def _list(self, prefix: str) -> Listing[Json]:
        items = [copy.deepcopy(v) for k, v in sorted(self._keys.items()) if k.startswith(prefix)]
        return Listing(items, self._rev)

    def _apply(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        check_compares(compares, {k: v.mod_revision for k, v in self._keys.items()})
        revision = self._rev + 1
        changed: list[Event] = []
        for op in ops:
            if isinstance(op, Put):
                old = self._keys.get(op.key)
                created = old.create_revision if old else revision
                self._keys[op.key] = Versioned(op.key, op.value, created, revision)
                changed.append(Event(EventKind.PUT, op.key, op.value, revision))
            elif self._keys.pop(op.key, None) is not None:
                changed.append(Event(EventKind.DELETE, op.key, None, revision))
        if not changed:
            return self._rev
        self._rev = revision
        self._events.extend(changed)
        self._floor = max(self._floor, revision - self._keep)
        while self._events and self._events[0].revision <= self._floor:
            self._events.popleft()
        return revision

    def _history(self, prefix: str, after: int) -> list[Event]:
        return [e for e in self._events if e.revision > after and e.key.startswith(prefix)]


class Typed(Generic[M]):
    """Models of one type under ``prefix``: validated on read, dumped as JSON on write."""

    def __init__(self, store: Store, prefix: str, model: type[M]):
        self.store = store
        self.prefix = prefix
        self.model = model

    def key(self, name: str) -> str:
        return self.prefix + name

    def _typed(self, item: Versioned[Json]) -> Versioned[M]:
        value = self.model.model_validate(item.value)
        return Versioned(item.key, value, item.create_revision, item.mod_revision)

    async def get(self, name: str) -> Versioned[M] | None:
        item = await self.store.get(self.key(name))
        return None if item is None else self._typed(item)

    async def list(self) -> Listing[M]:
        listing = await self.store.list(self.prefix)
        return Listing([self._typed(i) for i in listing.items], listing.revision)

    def put_op(self, name: str, value: M) -> Put:
        return Put(self.key(name), value.model_dump(mode="json"))

    async def put(self, name: str, value: M, expected_revision: int | None) -> int:
        return await self.store.put(
            self.key(name), value.model_dump(mode="json"), expected_revision
        )

    async def delete(self, name: str, expected_revision: int) -> int:
        return await self.store.delete(self.key(name), expected_revision)


def _is_a_store(store: MemoryStore) -> Store:
    return store  # mypy checks that MemoryStore implements Store
