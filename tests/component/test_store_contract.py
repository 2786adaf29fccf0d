"""The Store contract (state/store.py), run against every implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from hangar.errors import Conflict, InvalidInput
from hangar.state.db import Database
from hangar.state.sqlite_store import SqliteStore
from hangar.state.store import (
    Compacted,
    Compare,
    Delete,
    Event,
    EventKind,
    MemoryStore,
    Put,
    RevisionConflict,
    RevisionedStore,
    Typed,
)

StoreFactory = Callable[..., RevisionedStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    databases: list[Database] = []

    def factory(history: int = 1000) -> RevisionedStore:
        if request.param == "memory":
            return MemoryStore(history=history)
        db = Database(tmp_path / f"state-{len(databases)}.db")
        databases.append(db)
        return SqliteStore(db, history=history)

    yield factory
    for db in databases:
        db.close()


@pytest.fixture
def store(make_store: StoreFactory) -> RevisionedStore:
    return make_store()


async def test_put_get_and_revisions(store: RevisionedStore) -> None:
    assert await store.revision() == 1
    assert await store.get("a") is None
    first = await store.put("a", {"n": 1}, None)
    assert first == 2
    item = await store.get("a")
    assert item is not None and item.value == {"n": 1}
    assert (item.create_revision, item.mod_revision) == (2, 2)
    second = await store.put("a", {"n": 2}, expected_revision=2)
    assert second == 3
    item = await store.get("a")
    assert item is not None and (item.value, item.create_revision, item.mod_revision) == (
        {"n": 2},
        2,
        3,
    )
    # One revision counter for every key, as etcd's.
    assert await store.put("b", [1, "x"], 0) == 4
    assert await store.revision() == 4


async def test_a_stale_or_absent_expected_revision_is_refused_and_nothing_changes(
    store: RevisionedStore,
) -> None:
    await store.put("a", "one", None)
    with pytest.raises(RevisionConflict) as caught:
        await store.put("a", "two", None)  # must not exist
    assert isinstance(caught.value, Conflict)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("a", 0, 2)
    with pytest.raises(RevisionConflict):
        await store.put("a", "two", expected_revision=7)
    with pytest.raises(RevisionConflict):
        await store.put("new", "x", expected_revision=2)  # it does not exist
    with pytest.raises(RevisionConflict):
        await store.delete("a", expected_revision=1)
    item = await store.get("a")
    assert item is not None and item.value == "one" and item.mod_revision == 2
    assert await store.get("new") is None
    assert await store.revision() == 2
    assert await store.delete("a", expected_revision=2) == 3
    assert await store.get("a") is None
    # Re-created: a new create revision.
    await store.put("a", "again", None)
    item = await store.get("a")
    assert item is not None and item.create_revision == 4


async def test_a_commit_is_all_or_nothing(store: RevisionedStore) -> None:
    await store.put("x", 1, None)  # revision 2
    await store.put("y", 1, None)  # revision 3
    with pytest.raises(RevisionConflict):
        await store.commit(
            [Compare("x", 2), Compare("y", 2)],  # y's is 3
            [Put("x", 2), Put("z", 1), Delete("y")],
        )
    assert [(i.key, i.value) for i in (await store.list("")).items] == [("x", 1), ("y", 1)]
    assert await store.revision() == 3
    revision = await store.commit(
        [Compare("x", 2), Compare("y", 3), Compare("z", 0)],
        [Put("x", 2), Put("z", 1), Delete("y")],
    )
    assert revision == 4
    listing = await store.list("")
    assert [(i.key, i.value, i.mod_revision) for i in listing.items] == [("x", 2, 4), ("z", 1, 4)]
    assert listing.revision == 4
    # A commit that changes nothing makes no revision.
    assert await store.commit([], [Delete("gone")]) == 4
    with pytest.raises(InvalidInput):
        await store.commit([], [Put("x", 3), Delete("x")])
    assert (await store.get("x")) is not None


async def test_values_are_copies_of_json(store: RevisionedStore) -> None:
    value = {"list": [1, 2]}
    await store.put("k", value, None)
    value["list"].append(3)
    item = await store.get("k")
    assert item is not None and item.value == {"list": [1, 2]}
    assert isinstance(item.value, dict)
    item.value["list"].append(4)
    again = await store.get("k")
    assert again is not None and again.value == {"list": [1, 2]}
    with pytest.raises(TypeError):
        await store.put("bad", {"x": object()}, None)  # type: ignore[dict-item]
    assert await store.get("bad") is None


async def test_list_by_prefix(store: RevisionedStore) -> None:
    for key in ("quota/b", "quota/a", "quotas", "vms/1", "quota/a/x"):
        await store.put(key, key, None)
    listing = await store.list("quota/")
    assert [i.key for i in listing.items] == ["quota/a", "quota/a/x", "quota/b"]
    assert listing.revision == 6
    assert [i.key for i in (await store.list("nothing/")).items] == []
    # LIKE or GLOB characters are plain characters in a prefix.
    await store.put("a%b", 1, None)
    await store.put("axb", 1, None)
    assert [i.key for i in (await store.list("a%")).items] == ["a%b"]


async def _take(events: AsyncIterator[Event], count: int) -> list[Event]:
    got: list[Event] = []
    async with asyncio.timeout(10):
        async for event in events:
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_watch_sees_changes_in_order_then_new_ones(store: RevisionedStore) -> None:
    start = await store.revision()
    await store.put("w/a", 1, None)  # 2
    await store.put("other", 1, None)  # 3
    await store.commit([], [Put("w/b", 1), Delete("w/a")])  # 4
    watcher = store.watch("w/", after=start)
    seen = await _take(watcher, 2)
    assert [(e.kind, e.key, e.revision) for e in seen[:1]] == [(EventKind.PUT, "w/a", 2)]
    later = asyncio.create_task(_take(watcher, 2))
    await store.put("w/c", {"v": 3}, None)  # 5: arrives live
    got = await later
    changes = [*seen, *got]
    assert [(e.kind, e.key, e.value, e.revision) for e in changes] == [
        (EventKind.PUT, "w/a", 1, 2),
        (EventKind.PUT, "w/b", 1, 4),
        (EventKind.DELETE, "w/a", None, 4),
        (EventKind.PUT, "w/c", {"v": 3}, 5),
    ]


async def test_a_watch_resumes_from_any_kept_revision(store: RevisionedStore) -> None:
    for n in range(5):
        await store.put(f"r/{n}", n, None)  # revisions 2..6
    resumed = await _take(store.watch("r/", after=4), 2)
    assert [(e.key, e.revision) for e in resumed] == [("r/3", 5), ("r/4", 6)]


async def test_a_watch_from_before_the_history_is_told_compacted(
    make_store: StoreFactory,
) -> None:
    store = make_store(history=3)
    for n in range(6):
        await store.put(f"c/{n}", n, None)  # revisions 2..7; kept: 5, 6, 7
    with pytest.raises(Compacted) as caught:
        await _take(store.watch("c/", after=2), 1)
    assert caught.value.compacted == 4
    kept = await _take(store.watch("c/", after=4), 3)
    assert [e.revision for e in kept] == [5, 6, 7]


async def test_a_quiet_prefix_is_not_compacted_by_writes_elsewhere(
    make_store: StoreFactory,
) -> None:
    store = make_store(history=2)
    watcher = store.watch("quiet/", after=await store.revision())
    first = asyncio.create_task(_take(watcher, 1))
    await asyncio.sleep(0)  # the watcher waits (no assert depends on it)
    for n in range(5):
        await store.put(f"busy/{n}", n, None)
    await store.put("quiet/x", 1, None)
    assert [e.key for e in await first] == ["quiet/x"]


class Thing(BaseModel):
    name: str
    size: int = 0


async def test_typed_models(store: RevisionedStore) -> None:
    things = Typed(store, "things/", Thing)
    await things.put("a", Thing(name="a", size=3), None)
    item = await things.get("a")
    assert item is not None and item.value == Thing(name="a", size=3)
    with pytest.raises(RevisionConflict):
        await things.put("a", Thing(name="a"), None)
    await store.commit([], [things.put_op("b", Thing(name="b"))])
    assert [i.value.name for i in (await things.list()).items] == ["a", "b"]
    await things.delete("a", item.mod_revision)
    assert await things.get("a") is None


def test_the_sqlite_store_survives_a_reopen(tmp_path: Path) -> None:
    async def write() -> None:
        db = Database(tmp_path / "s.db")
        await SqliteStore(db).put("k", "v", None)
        db.close()

    async def read() -> tuple[int, object]:
        db = Database(tmp_path / "s.db")
        store = SqliteStore(db)
        item = await store.get("k")
        revision = await store.revision()
        db.close()
        return revision, item.value if item else None

    asyncio.run(write())
    assert asyncio.run(read()) == (2, "v")
