"""The conversation runtime: lock, load the session, run one flow step, act, save, reply.

Updates of one conversation are serialised by a Redis lock keyed by its pseudonym, so they are
processed in order across bot workers; different conversations run concurrently. Effects are
carried out before anything is said, so "received" is true when the victim reads it.

What the live console (handoff chat) and the case store behind receipts will do is not built
yet; until then the runtime does the honest visible part: a handoff or a returning victim's
request becomes a sealed report on the reports stream, with its priority, so counselors see it
in the queue, and the victim is told a real queue position.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from backend import streams
from backend.conversation import (
    CaseRequest,
    DeleteInbound,
    Effect,
    Inbound,
    IssueReceipt,
    Outbound,
    Pseudonym,
    QuickExit,
    RaisePriority,
    RecordFeedback,
    RequestHandoff,
    ShowResources,
    StepResult,
    SubmitReport,
)
from backend.flows import engine
from backend.flows.engine import Bundle, Context
from backend.flows.registry import FlowRegistry
from backend.receipts import ReceiptHasher
from bot.reports import ReportSender
from bot.sessions import HeldSession, Once, OnceRefusedError, SessionStore

log = logging.getLogger(__name__)

# How often a turn looks at the flows directory for a changed file (a few stat calls).
RELOAD_CHECK_S = 2.0
_QUEUE_SLOT = 10**10  # queue score: (3 - priority) * slot + unix time
_MAX_PRIORITY = 3


@dataclass(frozen=True)
class Turn:
    """What a channel must do after one inbound: send these, maybe erase the chat or the
    victim's last message."""

    messages: tuple[Outbound, ...]
    quick_exit: bool = False
    delete_inbound: bool = False
    # Every effect of the step, so a door can act on its own ones (e.g. `DeleteInbound`).
    effects: tuple[Effect, ...] = ()
    # The conversation has ended (quick exit, or the flow reached its end).
    ended: bool = False


@dataclass
class _Outcome:
    quick_exit: bool = False
    delete_inbound: bool = False
    values: dict[str, str] = field(default_factory=dict)


class ConversationRuntime:
    def __init__(
        self,
        redis: Redis,
        flows: FlowRegistry,
        sessions: SessionStore,
        reports: ReportSender,
        *,
        receipts: ReceiptHasher,
        clock: Callable[[], float] = time.time,
        reload_check_s: float = RELOAD_CHECK_S,
    ) -> None:
        self._redis = redis
        self._receipts = receipts
        self._flows = flows
        self._sessions = sessions
        self._reports = reports
        self._clock = clock
        self._reload_check_s = reload_check_s
        self._checked_at = clock()

    async def handle(self, inbound: Inbound, *, once: Once | None = None) -> Turn:
        """One turn. `once`: a claim on the input (a Telegram update) taken with the lock;
        `OnceRefusedError`, and nothing done, when it is someone else's."""
        try:
            async with self._sessions.hold(inbound.pseudonym, once=once) as held:
                return await self._handle_locked(inbound, held)
        except OnceRefusedError:
            raise
        except (RedisError, LockError, OSError):
            log.warning("conversation turn failed: redis unavailable")
        except Exception as exc:
            # The type and where, never the message or the traceback's locals: an error raised
            # while handling a victim's words may quote them.
            frame = exc.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
            log.error("conversation turn failed with %s at %s", type(exc).__name__, where)
        return Turn((self._unavailable(inbound),))

    def text(self, key: str, language_hint: str | None) -> str:
        """A shared `common.*` text for what a door says outside any flow step (a file it cannot
        take, a failure after the turn), so every victim-facing word stays in the locales an
        administrator edits. Reads the current bundle's translations; touches no session.
        """
        texts = self._flows.entry().texts
        return texts.get(key, texts.language_for(language_hint))

    def _unavailable(self, inbound: Inbound) -> Outbound:
        return Outbound(self.text("common.unavailable", inbound.language))

    def _refresh_flows(self) -> None:
        now = self._clock()
        if now - self._checked_at >= self._reload_check_s:
            self._checked_at = now
            if self._flows.refresh():
                log.info("flows reloaded: version %s", self._flows.entry().version)

    async def _handle_locked(self, inbound: Inbound, held: HeldSession) -> Turn:
        self._refresh_flows()
        session = held.session
        bundle = self._flows.for_session(session.version) if session is not None else None
        now = self._clock()
        if session is None or bundle is None:
            bundle = self._flows.entry()
            ctx = Context(int(now), bundle.hours.is_open(datetime.fromtimestamp(now, UTC)))
            session = bundle.new_session(inbound, secrets.token_hex(16))
            result = engine.start(bundle, session, ctx, inbound)
        else:
            ctx = Context(int(now), bundle.hours.is_open(datetime.fromtimestamp(now, UTC)))
            result = engine.step(bundle, session, inbound, ctx)
        outcome = await self._act(bundle, result, now)
        # Written with the lock's release, when the hold ends.
        if result.session.ended:
            held.delete()
        else:
            held.save(result.session)
        messages = tuple(_fill(m, outcome.values) for m in result.messages)
        return Turn(
            messages,
            quick_exit=outcome.quick_exit,
            delete_inbound=outcome.delete_inbound,
            effects=result.effects,
            ended=result.session.ended,
        )

    async def accepts_files(self, pseudonym: Pseudonym) -> bool:
        """Whether this conversation's current step takes files; read-only, no lock: the step
        checks again when the files arrive."""
        return await self.files_keep(pseudonym) is not None

    async def files_keep(self, pseudonym: Pseudonym) -> str | None:
        """What the current files step keeps of a file (`spec.FILES_KEEP`: hashes, match or
        sealed), None when the step takes no files (never for a minor); read-only, no lock."""
        session = await self._sessions.load(pseudonym)
        if session is None:
            return None
        bundle = self._flows.for_session(session.version)
        return None if bundle is None else engine.files_keep(bundle, session)

    def seal_file(self, data: bytes | bytearray) -> bytes:
        """A screenshot sealed to the centre key: the bot cannot open it again."""
        return self._reports.seal_file(data)

    async def end(self, pseudonym: Pseudonym) -> bool:
        """End a conversation from outside the flow (the victim blocked the bot); True if one
        was under way."""
        async with self._sessions.hold(pseudonym) as held:
            existed = held.session is not None
            held.delete()
        return existed

    async def flag_unreachable(self, case_ids: list[str]) -> None:
        """Tell the counselors of these cases that the victim cannot be reached (they blocked
        the bot): an event on the reports stream, stored as a flag on each case."""
        if case_ids:
            key = f"unreachable:{secrets.token_hex(16)}"
            await self._reports.send_event(key, streams.EVENT_VICTIM_UNREACHABLE, case_ids)

    async def _act(self, bundle: Bundle, result: StepResult, now: float) -> _Outcome:
        """Carry out the step's effects before anything is said, so "received" is true."""
        outcome = _Outcome()
        language = result.session.language
        for effect in result.effects:
            if isinstance(effect, SubmitReport):
                await self._reports.send(effect)
                log.info("report sealed and queued as case %s", effect.case_id)
            elif isinstance(effect, RequestHandoff):
                position = await self._handoff(effect, now)
                outcome.values["position"] = str(position)
                outcome.values["wait"] = str(position * bundle.hours.minutes_per_case)
            elif isinstance(effect, IssueReceipt):
                code_digest = await self._receipts.digest(effect.code)
                if code_digest is None:  # pragma: no cover - the step makes well-formed codes
                    raise ValueError("malformed receipt code")
                await self._redis.set(
                    streams.receipt_key(code_digest), effect.case_id, ex=streams.RECEIPT_TTL_S
                )
            elif isinstance(effect, CaseRequest):
                found = await self._case_request(effect)
                key = "receipt.status_sent" if found else "receipt.status_unknown"
                outcome.values["request_status"] = bundle.texts.get(key, language)
            elif isinstance(effect, RecordFeedback):
                await self._redis.hincrby(streams.FEEDBACK_COUNTS, effect.rating[:32], 1)
            elif isinstance(effect, RaisePriority):
                # The session keeps the level; every later report and handoff carries it.
                log.info("conversation priority raised to %d (%s)", effect.priority, effect.reason)
            elif isinstance(effect, ShowResources):
                log.debug("showed %d resources", len(effect.resource_ids))
            elif isinstance(effect, QuickExit):
                outcome.quick_exit = True
            elif isinstance(effect, DeleteInbound):
                outcome.delete_inbound = True
        return outcome

    async def _handoff(self, effect: RequestHandoff, now: float) -> int:
        """Seal the request onto the reports stream with its priority; the queue position."""
        answers = {**effect.answers, "request": f"counselor ({effect.reason})"}
        await self._reports.send(
            SubmitReport(
                idempotency_key=effect.idempotency_key,
                case_id=effect.case_id,
                category=effect.category,
                priority=effect.priority,
                language=effect.language,
                channel=effect.channel,
                answers=answers,
            )
        )
        log.info("handoff requested as case %s, priority %d", effect.case_id, effect.priority)
        queue = streams.HANDOFF_QUEUE
        oldest = now - streams.HANDOFF_QUEUE_WINDOW_S
        # withscores=True answers (member, score) pairs; redis-py types every shape at once.
        entries = cast(
            list[tuple[bytes, float]], await self._redis.zrange(queue, 0, -1, withscores=True)
        )
        stale = [member for member, score in entries if score % _QUEUE_SLOT < oldest]
        if stale:
            await self._redis.zrem(queue, *stale)
        level = _MAX_PRIORITY - min(effect.priority, _MAX_PRIORITY)
        await self._redis.zadd(queue, {effect.case_id: level * _QUEUE_SLOT + int(now)}, nx=True)
        rank = await self._redis.zrank(queue, effect.case_id)
        return 1 + (rank if isinstance(rank, int) else 0)

    async def _case_request(self, effect: CaseRequest) -> bool:
        """A returning victim's request, sealed onto the reports stream for the case's
        counselors; False when the receipt code is unknown (nothing is sent)."""
        code_digest = await self._receipts.digest(effect.code)
        if code_digest is None:
            return False
        case_id = await self._redis.get(streams.receipt_key(code_digest))
        if not isinstance(case_id, bytes):
            return False
        answers = {"request": effect.kind, "case": case_id.decode()}
        if effect.text:
            answers["addition"] = effect.text
        await self._reports.send(
            SubmitReport(
                idempotency_key=effect.idempotency_key,
                case_id=hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:32],
                category="follow_up",
                priority=1,
                language=effect.language,
                channel=effect.channel,
                answers=answers,
            )
        )
        log.info("request %s on a receipt queued", effect.kind)
        return True


def _fill(message: Outbound, values: dict[str, str]) -> Outbound:
    if "{" not in message.text:
        return message
    text = message.text
    for name in ("position", "wait", "request_status"):
        text = text.replace("{" + name + "}", values.get(name, "-"))
    return Outbound(text, message.buttons, message.key)
