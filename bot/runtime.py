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
from backend.shifts import ShiftBoard
from bot.reports import ReportSender
from bot.sessions import SessionStore

log = logging.getLogger(__name__)

# How often a turn looks at the flows directory for a changed file (a few stat calls).
RELOAD_CHECK_S = 2.0
# Said instead of the handoff's usual text when nobody is on shift (it must exist in every
# locale: a `safety.*` key, checked by the linter).
UNATTENDED_KEY = "safety.no_counselor"
_HANDOFF_SAID = frozenset({"safety.handoff", "counselor.left"})
_UNATTENDED = "unattended"


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
        shifts: ShiftBoard | None = None,
    ) -> None:
        self._redis = redis
        # Who is on shift, asked at each handoff; None: not asked (flow tests, benches), and
        # a handoff is answered as if a counselor were there.
        self._shifts = shifts
        self._receipts = receipts
        self._flows = flows
        self._sessions = sessions
        self._reports = reports
        self._clock = clock
        self._reload_check_s = reload_check_s
        self._checked_at = clock()

    async def handle(self, inbound: Inbound) -> Turn:
        try:
            lock = self._redis.lock(
                streams.conversation_lock_key(inbound.pseudonym),
                timeout=streams.CONVERSATION_LOCK_TTL_S,
                blocking_timeout=streams.CONVERSATION_LOCK_WAIT_S,
            )
            async with lock:
                return await self._handle_locked(inbound)
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

    async def _handle_locked(self, inbound: Inbound) -> Turn:
        self._refresh_flows()
        session = await self._sessions.load(inbound.pseudonym)
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
        if result.session.ended:
            await self._sessions.delete(inbound.pseudonym)
        else:
            await self._sessions.save(inbound.pseudonym, result.session)
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
        session = await self._sessions.load(pseudonym)
        if session is None:
            return False
        bundle = self._flows.for_session(session.version)
        return bundle is not None and engine.accepts_files(bundle, session)

    async def end(self, pseudonym: Pseudonym) -> bool:
        """End a conversation from outside the flow (the victim blocked the bot); True if one
        was under way."""
        lock = self._redis.lock(
            streams.conversation_lock_key(pseudonym),
            timeout=streams.CONVERSATION_LOCK_TTL_S,
            blocking_timeout=streams.CONVERSATION_LOCK_WAIT_S,
        )
        async with lock:
            existed = await self._sessions.load(pseudonym) is not None
            await self._sessions.delete(pseudonym)
        return existed

    async def _act(self, bundle: Bundle, result: StepResult, now: float) -> _Outcome:
        """Carry out the step's effects before anything is said, so "received" is true."""
        outcome = _Outcome()
        language = result.session.language
        for effect in result.effects:
            if isinstance(effect, SubmitReport):
                await self._reports.send(effect)
                log.info("report sealed and queued as case %s", effect.case_id)
            elif isinstance(effect, RequestHandoff):
                on_shift = 1 if self._shifts is None else await self._shifts.count()
                position = await self._handoff(effect, now, on_shift)
                outcome.values["position"] = str(position)
                # Each counselor on shift takes one case at a time: more of them, shorter waits.
                per_case = bundle.hours.minutes_per_case
                outcome.values["wait"] = str(-(-position * per_case // max(1, on_shift)))
                if on_shift == 0:
                    outcome.values[_UNATTENDED] = await self._unattended(bundle, result, effect)
            elif isinstance(effect, IssueReceipt):
                await self._issue_receipt(effect)
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

    async def _issue_receipt(self, effect: IssueReceipt) -> None:
        code_digest = await self._receipts.digest(effect.code)
        if code_digest is None:  # pragma: no cover - the step makes well-formed codes
            raise ValueError("malformed receipt code")
        await self._redis.set(
            streams.receipt_key(code_digest), effect.case_id, ex=streams.RECEIPT_TTL_S
        )

    async def _unattended(self, bundle: Bundle, result: StepResult, effect: RequestHandoff) -> str:
        """What a victim is told when nobody is on shift: that honestly, the emergency numbers
        (in the text) and a receipt to come back with. The code is the conversation's own (the
        one a report in it gives too); if it has none yet, it is issued now for this request.

        The request waits in the queue like any other, by priority and then arrival: the first
        counselor back finds it above every later request of its priority. It gets no higher
        priority, which would put a plain request above a later sextortion in progress.
        """
        session = result.session
        code = str(session.slots.get("_receipt") or "")
        if not code:
            code = engine.receipt_code(session.conversation_id)
            session.slots["_receipt"] = code
            await self._issue_receipt(IssueReceipt(effect.case_id, code))
        return bundle.texts.render(UNATTENDED_KEY, session.language, {"receipt": code})

    async def _handoff(self, effect: RequestHandoff, now: float, on_shift: int) -> int:
        """Seal the request onto the reports stream with its priority; the queue position."""
        unattended = "; nobody was on shift" if on_shift == 0 else ""
        answers = {**effect.answers, "request": f"counselor ({effect.reason}{unattended})"}
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
        stale = [m for m, score in entries if score % streams.HANDOFF_QUEUE_SLOT < oldest]
        if stale:
            await self._redis.zrem(queue, *stale)
        score = streams.handoff_queue_score(effect.priority, now)
        await self._redis.zadd(queue, {effect.case_id: score}, nx=True)
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
    if message.key in _HANDOFF_SAID and _UNATTENDED in values:
        return Outbound(values[_UNATTENDED], message.buttons, UNATTENDED_KEY)
    if "{" not in message.text:
        return message
    text = message.text
    for name in ("position", "wait", "request_status"):
        text = text.replace("{" + name + "}", values.get(name, "-"))
    return Outbound(text, message.buttons, message.key)
