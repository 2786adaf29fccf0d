"""The audit service's housekeeping (issue 14, item 10): retention applies without
waiting for traffic, a burst of unauthenticated noise is summarised even when nothing
follows it, the per-source counter stays small, and a bad setting is refused clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.services import audit as audit_module
from hangar.services.audit import (
    HOST_SCOPE,
    MAX_SOURCES,
    NOISE_WINDOW,
    OTHER_SOURCES,
    AuditService,
    Retention,
)
from hangar.services.events import EventBus
from hangar.state.audit import AuditRepository
from hangar.state.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> AuditService:
    repo = AuditRepository(Database(tmp_path / "h.db"))
    return AuditService(repo, EventBus(), Retention(max_rows=1000, max_age_days=90), clock)


def _record(service: AuditService, action: str) -> None:
    service.record(
        project="alpha", actor_id="t", actor_name="t", action=action, resource="r", status=200
    )


async def _until(predicate: Callable[[], object], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_sources_beyond_the_cap_are_counted_together(service: AuditService) -> None:
    for n in range(MAX_SOURCES + 500):
        service.unauthenticated(f"2001:db8::{n:x}")
    service.unauthenticated("2001:db8::0")  # an address already counted keeps its own
    summary = service.flush_noise(force=True)
    assert summary is not None and summary.project == HOST_SCOPE
    assert summary.resource == f"{MAX_SOURCES + 501} request(s) from {MAX_SOURCES + 1}+ source(s)"
    assert "2001:db8::0 (2)" in summary.message
    assert service.unauthenticated_total == MAX_SOURCES + 501
    assert len(service._noise.sources) == 0  # the next window starts afresh
    assert f"{OTHER_SOURCES} (500)" in summary.message


def test_housekeeping_summarises_a_burst_nothing_followed(
    service: AuditService, clock: Clock
) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(service.run(interval=0.01))
        try:
            for _ in range(7):
                service.unauthenticated("203.0.113.9")
            await asyncio.sleep(0.05)
            assert service.repo.list(HOST_SCOPE) == []  # the window is still open
            clock.now += NOISE_WINDOW
            await _until(lambda: service.repo.list(HOST_SCOPE), "no noise summary written")
        finally:
            task.cancel()
        [entry] = service.repo.list(HOST_SCOPE)
        assert entry.resource == "7 request(s) from 1 source(s)"
        assert entry.actor_name == "unauthenticated" and entry.status == 401

    asyncio.run(scenario())


def test_housekeeping_prunes_at_start_and_then_periodically(
    service: AuditService, clock: Clock
) -> None:
    for n in range(5):
        _record(service, f"old{n}")
    # Written long ago (as a hangard that was down for months left them).
    with service.repo.db.transaction() as conn:
        conn.execute("UPDATE audit SET at = '2000-01-01T00:00:00.000+00:00'")
    _record(service, "new")

    async def scenario() -> None:
        task = asyncio.create_task(service.run(interval=0.01))
        try:
            await _until(lambda: len(service.repo.list(None)) == 1, "old entries kept at start")
            assert [e.action for e in service.repo.list(None)] == ["new"]
            service.retention = Retention(max_rows=2, max_age_days=90)
            for n in range(4):
                _record(service, f"later{n}")
            await asyncio.sleep(0.05)
            assert len(service.repo.list(None)) == 5  # not yet: pruned once an interval
            clock.now += audit_module.PRUNE_INTERVAL
            await _until(lambda: len(service.repo.list(None)) == 2, "not pruned periodically")
        finally:
            task.cancel()
        assert [e.action for e in service.repo.list(None)] == ["later2", "later3"]

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_a_bad_retention_setting_is_refused_clearly(value: str) -> None:
    with pytest.raises(InvalidInput, match="HANGAR_AUDIT_MAX_ROWS"):
        Retention.from_env({"HANGAR_AUDIT_MAX_ROWS": value})


def test_retention_settings_come_from_the_environment() -> None:
    assert Retention.from_env({}) == Retention(max_rows=100_000, max_age_days=90)
    got = Retention.from_env({"HANGAR_AUDIT_MAX_ROWS": "50", "HANGAR_AUDIT_MAX_DAYS": "7"})
    assert got == Retention(max_rows=50, max_age_days=7)
