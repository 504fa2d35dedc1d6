"""The centre's state as Prometheus gauges, read when Prometheus scrapes a backend node.

Every backend node reads the same shared Redis and database, so every one exports the same
values: dashboards and alerts take `max()` over the nodes. Read at scrape time rather than by a
timer, so an idle node does no work and a scrape is never older than the data.

Counts per priority only (0-3, `redis_keys.HANDOFF_MAX_PRIORITY`): never a case id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis

from backend.cases import CaseStore
from backend.core import redis_keys
from backend.core.settings import SlaPolicy
from backend.core.shifts import ShiftBoard

PRIORITIES = tuple(str(p) for p in range(redis_keys.HANDOFF_MAX_PRIORITY + 1))


class CentreGauges:
    def __init__(
        self,
        registry: CollectorRegistry,
        redis: Redis,
        cases: CaseStore,
        shifts: ShiftBoard,
        sla: SlaPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._cases = cases
        self._shifts = shifts
        self._sla = sla
        self._clock = clock
        r = registry
        self._depth = Gauge(
            "hotline_queue_depth", "Cases waiting for a counselor", ["priority"], registry=r
        )
        self._oldest = Gauge(
            "hotline_queue_oldest_wait_seconds",
            "How long the longest-waiting case has waited",
            ["priority"],
            registry=r,
        )
        self._sla_missed = Gauge(
            "hotline_queue_sla_missed",
            "Waiting cases past their priority's SLA target (HOTLINE_SLA_MINUTES)",
            ["priority"],
            registry=r,
        )
        self._intake_lag = Gauge(
            "hotline_intake_lag_entries",
            "Reports on the stream not yet stored (intake deletes what it stored)",
            registry=r,
        )
        self._intake_oldest = Gauge(
            "hotline_intake_oldest_entry_seconds",
            "Age of the oldest report not yet stored (0: none waiting)",
            registry=r,
        )
        self._dead = Gauge(
            "hotline_dead_letters",
            "Reports intake could not store, waiting for a person",
            registry=r,
        )
        self._on_shift = Gauge("hotline_counselors_on_shift", "Counselors on shift now", registry=r)
        self._readable = Gauge(
            "hotline_centre_gauges_readable",
            "1 if the last scrape could read the queue, intake and shifts; 0 if not",
            registry=r,
        )

    async def refresh(self) -> None:
        try:
            await self._read()
        except Exception:
            self._readable.set(0)
            raise
        self._readable.set(1)

    async def _read(self) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        depth = dict.fromkeys(PRIORITIES, 0)
        oldest = dict.fromkeys(PRIORITIES, 0.0)
        missed = dict.fromkeys(PRIORITIES, 0)
        for case in await self._cases.list_waiting():
            priority = str(max(0, min(case.priority, redis_keys.HANDOFF_MAX_PRIORITY)))
            received = case.received_at
            if received.tzinfo is None:  # SQLite hands back naive datetimes; all are UTC
                received = received.replace(tzinfo=UTC)
            waited_s = max(0.0, (now - received).total_seconds())
            depth[priority] += 1
            oldest[priority] = max(oldest[priority], waited_s)
            missed[priority] += waited_s >= self._sla.target_s(case.priority)
        for priority in PRIORITIES:
            self._depth.labels(priority).set(depth[priority])
            self._oldest.labels(priority).set(oldest[priority])
            self._sla_missed.labels(priority).set(missed[priority])
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(redis_keys.REPORTS_STREAM)
            pipe.xrange(redis_keys.REPORTS_STREAM, count=1)
            pipe.xlen(redis_keys.DEAD_LETTER_STREAM)
            lag, first, dead = await pipe.execute()
        self._intake_lag.set(int(lag))
        entries = cast(list[tuple[bytes, object]], first)
        if entries:
            written_ms = int(entries[0][0].split(b"-", 1)[0])
            self._intake_oldest.set(max(0.0, self._clock() - written_ms / 1000))
        else:
            self._intake_oldest.set(0)
        self._dead.set(int(dead))
        self._on_shift.set(await self._shifts.count())
