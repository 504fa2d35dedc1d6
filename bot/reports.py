"""Sealing a report on the bot and handing it to the reports stream.

Only the centre's public key is here. The victim is told "received" only after XADD returns,
which (with Redis' append-only file) means the sealed report is durable.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis

from backend.core import keys, redis_keys
from backend.core.conversation import SubmitReport
from backend.core.sealing import RoutingHeader, seal


class ReportSender:
    def __init__(self, redis: Redis, center_key: X25519PublicKey) -> None:
        self._redis = redis
        self._center_key = center_key
        self._key_id = keys.key_id(center_key)

    async def send(self, report: SubmitReport) -> None:
        header = RoutingHeader(
            case_id=report.case_id,
            priority=report.priority,
            language=report.language,
            channel=report.channel,
            category=report.category,
            key_id=self._key_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            follows=report.follows,
        )
        content: dict[str, object] = {"answers": report.answers}
        if report.sealed_files:
            # Each sealed on its own at upload (`seal_file`); a counselor opens them with the
            # same centre key, inside this report's envelope.
            content["sealed_files"] = list(report.sealed_files)
        body = json.dumps(content, ensure_ascii=False).encode()
        envelope = seal(body, header, self._center_key)
        await self._redis.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: report.idempotency_key,
                redis_keys.FIELD_ENVELOPE: envelope.to_bytes(),
            },
        )

    def seal_file(self, data: bytes | bytearray) -> bytes:
        """Seal a file's bytes to the centre key; the header names no case (none exists yet)
        and nothing of the file."""
        header = RoutingHeader(
            case_id="file",
            priority=0,
            language="",
            channel="",
            category="sealed_file",
            key_id=self._key_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        return seal(bytes(data), header, self._center_key).to_bytes()

    async def send_receipt(self, case_id: str, code_digest: str) -> None:
        """Tell the backend a receipt was issued for a case: the code's slow digest only (the
        code never leaves the victim's screen), so a counselor can find the case by a code the
        victim reads out. Sent after the case's own report, so intake finds the case."""
        key = "receipt:" + hashlib.sha256(f"{case_id}:{code_digest}".encode()).hexdigest()[:32]
        await self._redis.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: key,
                redis_keys.FIELD_EVENT: redis_keys.EVENT_RECEIPT_ISSUED,
                redis_keys.FIELD_CASE_IDS: case_id,
                redis_keys.FIELD_CODE_DIGEST: code_digest,
            },
        )

    async def send_event(self, idempotency_key: str, event: str, case_ids: list[str]) -> None:
        """An event about stored cases (`redis_keys.EVENTS`): no envelope, as it says nothing a
        victim said; the case ids are the routing facts a report's header carries in clear."""
        await self._redis.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: idempotency_key,
                redis_keys.FIELD_EVENT: event,
                redis_keys.FIELD_CASE_IDS: " ".join(case_ids),
            },
        )
