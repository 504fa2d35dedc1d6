"""Retention: cases past their status' retention period are crypto-shredded.

Shredding destroys the case's wrapped data key (and its ciphertext and receipts) in the same
transaction as the "purge" audit link. Once that commits, no key the centre holds, now or in any
later backup, can read the case: its data key existed only in that one wrapped form.
A backup taken *before* the purge still holds the wrapped data key; that is why backups need a
retention no longer than the shortest case retention (THREAT_MODEL.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from redis.asyncio import Redis

from backend import erasure
from backend.cases import CaseStore
from backend.core.settings import Retention
from backend.models import CaseStatus, utcnow

log = logging.getLogger(__name__)

ACTOR = "system:retention"
PURGE_BATCH = 500


class RetentionJob:
    def __init__(self, cases: CaseStore, retention: Retention, redis: Redis | None = None) -> None:
        self._cases = cases
        # Where the bot keeps a case's receipt, reply key and replies: they go with the case.
        self._redis = redis
        self._policy = {
            CaseStatus(status): timedelta(days=days)
            for status, days in retention.by_status().items()
        }
        self._interval_s = retention.interval_s
        self._stopping = asyncio.Event()

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Shred every case past its retention; the number shredded. Safe on several nodes."""
        now = now or utcnow()
        purged = 0
        while ids := await self._cases.expired(self._policy, now, PURGE_BATCH):
            for case_id in ids:
                if await erasure.shred(
                    self._cases, self._redis, case_id, ACTOR, "retention expired"
                ):
                    purged += 1
            if len(ids) < PURGE_BATCH:
                break
        if purged:
            log.info("retention: crypto-shredded %d cases", purged)
        return purged

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.purge_expired()
            except Exception:
                log.exception("retention: purge failed; retrying at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    def stop(self) -> None:
        self._stopping.set()
