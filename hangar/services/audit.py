"""The audit log as a policy: what is written, where, for how long.

* Each entry lands in the caller's own scope: a token's project (also when it was
  refused in another project: that project's log never shows strangers' probes),
  the project the host administrator acted in, or ``-`` (host-wide) for requests
  nobody could be identified for.
* Requests without a valid token are noise anyone can make: they are counted, and
  at most one entry per :data:`NOISE_WINDOW` seconds says how many came from how
  many sources, instead of one row each (2,000 such requests once wrote 8 MB).
* Retention: entries older than ``max_age_days``, and those beyond the newest
  ``max_rows`` of their scope (per project, so one project's traffic, refused
  requests included, cannot push another project's entries out), are pruned when
  hangard starts, every :data:`PRUNE_EVERY` entries written and every
  :data:`PRUNE_INTERVAL` seconds (:meth:`AuditService.run`, which also writes the
  summary of a burst of noise that nothing followed). The defaults, 90 days and
  100,000 entries, are set with HANGAR_AUDIT_MAX_DAYS and HANGAR_AUDIT_MAX_ROWS.
* Audit events go to the event stream typed ``audit``; the stream sends them only
  to subscribers who may read the audit log (api/events.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hangar.errors import InvalidInput
from hangar.services.events import EventBus
from hangar.state.audit import AuditEntry as AuditEntry  # the service's view, re-exported
from hangar.state.audit import AuditRepository

log = logging.getLogger(__name__)

HOST_SCOPE = "-"
NOISE_WINDOW = 60.0
PRUNE_EVERY = 100
PRUNE_INTERVAL = 3600.0
# Sources (client addresses) counted by name in one noise window; more (an IPv6 prefix
# has many addresses) are counted under OTHER_SOURCES, so the counter stays small.
MAX_SOURCES = 256
OTHER_SOURCES = "other"
DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_DAYS = 90


@dataclass
class Retention:
    max_rows: int = DEFAULT_MAX_ROWS
    max_age_days: int = DEFAULT_MAX_DAYS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Retention:
        env = os.environ if environ is None else environ
        return cls(
            max_rows=_positive(env, "HANGAR_AUDIT_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_age_days=_positive(env, "HANGAR_AUDIT_MAX_DAYS", DEFAULT_MAX_DAYS),
        )


def _positive(env: Mapping[str, str], key: str, default: int) -> int:
    text = env.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInput(
            f"{key}={text!r} is not a positive whole number",
            hint=f"set {key} to a number of {'entries' if 'ROWS' in key else 'days'} "
            f"(default {default}), or unset it",
        )
    return value


@dataclass
class _Noise:
    """Unauthenticated requests seen since the last summary entry."""

    started: float = 0.0
    count: int = 0
    total: int = 0
    sources: Counter[str] = field(default_factory=Counter)


class AuditService:
    def __init__(
        self,
        repo: AuditRepository,
        events: EventBus,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.repo = repo
        self.events = events
        self.retention = retention or Retention.from_env()
        self.clock = clock
        self._noise = _Noise()
        self._since_prune = 0

    def list(self, project: str | None = None, limit: int = 100) -> list[AuditEntry]:
        self.flush_noise(force=True)
        return self.repo.list(project, limit)

    @property
    def unauthenticated_total(self) -> int:
        """Unauthenticated requests refused since hangard started."""
        return self._noise.total

    def record(
        self,
        *,
        project: str,
        actor_id: str,
        actor_name: str,
        action: str,
        resource: str,
        status: int,
        message: str = "",
    ) -> AuditEntry:
        entry = self.repo.append(
            project=project,
            actor_id=actor_id,
            actor_name=actor_name,
            action=action,
            resource=resource,
            status=status,
            message=message,
        )
        self.events.publish("audit", entry.project, entry.model_dump())
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune()
        return entry

    def unauthenticated(self, source: str) -> None:
        """Count one request refused for want of a valid token (from ``source``)."""
        now = self.clock()
        noise = self._noise
        if noise.count and now - noise.started >= NOISE_WINDOW:
            self.flush_noise(force=True)
        if noise.count == 0:
            noise.started = now
        noise.count += 1
        noise.total += 1
        if source not in noise.sources and len(noise.sources) >= MAX_SOURCES:
            source = OTHER_SOURCES
        noise.sources[source] += 1

    def flush_noise(self, *, force: bool = False) -> AuditEntry | None:
        """Write the summary entry of the unauthenticated requests counted so far (when
        the window has passed, or ``force``)."""
        noise = self._noise
        if noise.count == 0 or (not force and self.clock() - noise.started < NOISE_WINDOW):
            return None
        top = ", ".join(f"{src} ({n})" for src, n in noise.sources.most_common(5))
        count, sources = noise.count, len(noise.sources)
        plus = "+" if OTHER_SOURCES in noise.sources else ""
        noise.count = 0
        noise.sources = Counter()
        return self.record(
            project=HOST_SCOPE,
            actor_id="-",
            actor_name="unauthenticated",
            action="refused-unauthenticated",
            resource=f"{count} request(s) from {sources}{plus} source(s)",
            status=401,
            message=f"most from: {top}",
        )

    def prune(self) -> int:
        """Apply the retention policy; how many entries went."""
        self._since_prune = 0
        cutoff = datetime.now(UTC) - timedelta(days=self.retention.max_age_days)
        return self.repo.prune(
            keep_newest=self.retention.max_rows,
            older_than=cutoff.isoformat(timespec="milliseconds"),
        )

    async def run(self, interval: float = NOISE_WINDOW) -> None:
        """Until cancelled: prune at once and then every :data:`PRUNE_INTERVAL` seconds,
        and write the noise summary once its window has passed (also when no request
        follows a burst)."""
        last_prune: float | None = None
        while True:
            try:
                self.flush_noise()
                if last_prune is None or self.clock() - last_prune >= PRUNE_INTERVAL:
                    last_prune = self.clock()
                    self.prune()
            except Exception:  # a full disk must not end auditing for good
                log.exception("audit housekeeping failed")
            await asyncio.sleep(interval)
