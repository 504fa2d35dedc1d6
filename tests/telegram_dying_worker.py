"""A bot worker that dies mid-update, for tests/test_telegram_polling.py: run as
`python -m tests.telegram_dying_worker <redis url> <Bot API base url> <root secret hex>
[after-step <outgoing lease s> | claim <update lease s>]`.

It long-polls the fake Bot API with the real door, and the first update it handles never
finishes: its turn claims the update and locks the conversation, announces itself on stdout and
waits, until the test kills the process. With `after-step`, the turn runs to its end (the
conversation steps, the update is marked done, the replies are kept) and it is the first reply
that never leaves: the worker says "stepped" and waits. With `claim`, the update's claim
outlives the conversation lock (`LEASE_S`) by that many seconds, as the real claim's lease
(`TELEGRAM_UPDATE_TURN_LEASE_S`) may outlive a lock another worker takes meanwhile.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from backend.core import keys
from backend.core.conversation import Inbound
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import HeldSession, SessionStore
from bot.telegram.door import TelegramConfig, TelegramDoor
from tests.conftest import FAST_KDF
from tests.telegram_support import FAST_LIMITS, SESSION_TTL_S, TOKEN

LEASE_S = 1


class _StuckRuntime(ConversationRuntime):
    """Claims the update and takes the conversation lock like any turn, then never ends."""

    async def _handle_locked(self, inbound: Inbound, held: HeldSession) -> Turn:
        print("in-turn", flush=True)
        await asyncio.Event().wait()
        raise AssertionError("never reached")


async def main(
    redis_url: str,
    base_url: str,
    root_secret: bytes,
    *,
    after_step: bool,
    outgoing_lease_s: float,
    claim_lease_s: int,
) -> None:
    redis = Redis.from_url(redis_url)
    runtime = (ConversationRuntime if after_step else _StuckRuntime)(
        redis,
        FlowRegistry.load(SHIPPED_FLOWS_DIR),
        # The lock a dead worker leaves runs out with its claim's lease, as the real lock
        # (30 s) does long before the real lease (120 s).
        SessionStore(redis, root_secret, SESSION_TTL_S, lock_ttl_s=LEASE_S),
        ReportSender(redis, keys.generate_private_key().public_key()),
        receipts=ReceiptHasher(b"r" * 32, b"s" * 16, FAST_KDF),
    )
    config = TelegramConfig(
        token=TOKEN,
        base_url=base_url,
        limits=FAST_LIMITS,
        update_lease_s=claim_lease_s,
        poll_lease_s=LEASE_S,
        outgoing_lease_s=outgoing_lease_s,
    )
    door = TelegramDoor(
        config,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(root_secret),
        redis=redis,
        root_secret=root_secret,
        session_ttl_s=SESSION_TTL_S,
    )
    if after_step:

        async def stuck(*_args: object, **_kwargs: object) -> int:
            print("stepped", flush=True)
            await asyncio.Event().wait()
            raise AssertionError("never reached")

        door.outbox.send = stuck  # type: ignore[method-assign]  # the reply that never leaves
    await door.start()
    print("polling", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    after = sys.argv[4:5] == ["after-step"]
    lease = float(sys.argv[5]) if after else float(LEASE_S)
    claim = int(sys.argv[5]) if sys.argv[4:5] == ["claim"] else LEASE_S
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            bytes.fromhex(sys.argv[3]),
            after_step=after,
            outgoing_lease_s=lease,
            claim_lease_s=claim,
        )
    )
