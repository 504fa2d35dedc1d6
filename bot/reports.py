"""Sealing a report on the bot and handing it to the reports stream.

Only the centre's public key is here. The victim is told "received" only after XADD returns,
which (with Redis' append-only file) means the sealed report is durable. With replicas (Redis
under Sentinel), a failover promotes a replica that may not have the newest writes, so there
"received" also waits until at least one replica has the report (`WAIT 1`, on the connection
that wrote it): a failover loses no report a victim was told was received. When no replica is
connected at all (the last one is down), there is nothing to wait for and the primary's own
append-only file is what keeps it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from backend.core import keys, redis_keys
from backend.core.conversation import SubmitReport
from backend.core.evidence_records import RECORDS_FIELD
from backend.core.receipt_codes import DigestScheme
from backend.core.sealing import RoutingHeader, seal


class NotReplicatedError(RedisError):
    """A report reached the primary but no connected replica confirmed it in time."""


class ReportSender:
    def __init__(
        self, redis: Redis, center_key: X25519PublicKey, *, replicated: bool = False
    ) -> None:
        self._redis = redis
        self._center_key = center_key
        self._key_id = keys.key_id(center_key)
        self._replicated = replicated

    async def send(
        self, report: SubmitReport, *, blocking: str | None = None, joins: bool = False
    ) -> None:
        """Seal and queue a report; `blocking` (the sender's BLOCKING pseudonym) goes inside
        the seal, for a counselor who decides to block the sender (`backend/blocks.py`).
        `joins`: a handoff request for the conversation's case already sent (its report or an
        earlier request), attached to that case rather than stored as another."""
        header = RoutingHeader(
            case_id=report.case_id,
            priority=report.priority,
            language=report.language,
            channel=report.channel,
            category=report.category,
            key_id=self._key_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            follows=report.follows,
            age_group=report.age_group,
        )
        content: dict[str, object] = {"answers": report.answers}
        if blocking is not None:
            content["blocking"] = blocking
        if report.sealed_files:
            # Each sealed on its own at upload (`seal_file`); a counselor opens them with the
            # same centre key, inside this report's envelope.
            content["sealed_files"] = list(report.sealed_files)
        if report.evidence:
            content[RECORDS_FIELD] = list(report.evidence)
        body = json.dumps(content, ensure_ascii=False).encode()
        envelope = seal(body, header, self._center_key)
        fields: dict[FieldT, EncodableT] = {
            redis_keys.FIELD_IDEMPOTENCY_KEY: report.idempotency_key,
            redis_keys.FIELD_ENVELOPE: envelope.to_bytes(),
        }
        if joins:
            fields[redis_keys.FIELD_JOINS] = report.case_id
        if not self._replicated:
            await self._redis.xadd(redis_keys.REPORTS_STREAM, fields)
            return
        # One connection for both: WAIT counts the replicas that have this connection's writes.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(redis_keys.REPORTS_STREAM, fields)
            pipe.wait(1, redis_keys.REPORT_REPLICA_ACK_MS)
            _, acknowledged = await pipe.execute()
        if int(acknowledged) < 1 and await self._replicas_connected():
            raise NotReplicatedError("no replica confirmed the report in time")

    async def _replicas_connected(self) -> int:
        info = await self._redis.info("replication")
        return int(info.get("connected_slaves", 0))

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

    async def send_receipt(
        self, case_id: str, code_digest: str, scheme: DigestScheme = DigestScheme.KEYED
    ) -> None:
        """Tell the backend a receipt was issued for a case: the code's digest only (the
        code never leaves the victim's screen), so a counselor can find the case by a code the
        victim reads out. Sent after the case's own report, so intake finds the case."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_receipt(pipe, case_id, code_digest, scheme)
            await pipe.execute()

    def queue_receipt(
        self,
        pipe: Pipeline,
        case_id: str,
        code_digest: str,
        scheme: DigestScheme = DigestScheme.KEYED,
    ) -> None:
        """`send_receipt` as a command on a pipeline the caller executes with its own writes."""
        key = "receipt:" + hashlib.sha256(f"{case_id}:{code_digest}".encode()).hexdigest()[:32]
        pipe.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: key,
                redis_keys.FIELD_EVENT: redis_keys.EVENT_RECEIPT_ISSUED,
                redis_keys.FIELD_CASE_IDS: case_id,
                redis_keys.FIELD_CODE_DIGEST: code_digest,
                redis_keys.FIELD_DIGEST_SCHEME: scheme.value,
            },
        )

    async def send_priority(self, case_ids: list[str], priority: int) -> None:
        """Tell the backend these cases became more urgent (triage); content-free."""
        key = f"priority:{secrets.token_hex(16)}"
        await self._redis.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: key,
                redis_keys.FIELD_EVENT: redis_keys.EVENT_PRIORITY_RAISED,
                redis_keys.FIELD_CASE_IDS: " ".join(case_ids),
                redis_keys.FIELD_PRIORITY: str(priority),
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
