"""The conversation runtime: lock, load the session, run one flow step, act, save, reply.

Updates of one conversation are serialised by a Redis lock keyed by its pseudonym, so they are
processed in order across bot workers; different conversations run concurrently. Effects are
carried out before anything is said, so "received" is true when the victim reads it.

A handoff becomes a sealed request on the reports stream, with its priority, so counselors see
it in the queue, and the victim is told a real queue position and how a counselor's replies
will reach them on their channel. The request carries the conversation's reply key, and the
session outlives the flow's end while the handoff is open (`bot.live`). Once a counselor has
joined (the relay sets `Session.live`), the victim's texts go to the counselor, sealed, instead
of to the flow; the way out (/exit, the quick-exit button) still ends everything, and tells
the counselor the victim left.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from backend.core import redis_keys, replies, waiting_line
from backend.core.conversation import (
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
    Session,
    ShowResources,
    StepResult,
    SubmitReport,
    TriageAlert,
)
from backend.core.live_chat import REPLY_KEY_ANSWER
from backend.core.metrics import Metrics
from backend.core.receipt_codes import DigestScheme, ReceiptHasher
from backend.core.shifts import ShiftBoard
from backend.flows import engine
from backend.flows.channels import FILE_CHANNELS
from backend.flows.engine import (
    BUILT_IN_EXITS,
    CASE_SLOT,
    QUICK_EXIT_BUTTON,
    RECEIPT_SLOT,
    Bundle,
    Context,
)
from backend.flows.flow_source import FlowSource
from backend.flows.texts import SAFETY_PREFIX
from bot.inbound_limits import InboundLimits, Sender
from bot.live import CHECK_BUTTON, VictimSide, how_replies_key
from bot.reports import ReportSender
from bot.sessions import (
    BlockedError,
    ExitedError,
    ExitMark,
    HeldSession,
    Once,
    OnceRefusedError,
    Peeked,
    Replies,
    SessionStore,
)

log = logging.getLogger(__name__)

# Placeholders the runtime fills after a step's effects (queue place, receipt lookups, who
# reads a report); every other `{name}` is the engine's.
RUNTIME_PLACEHOLDERS = ("position", "wait", "request_status", "reply_how", "who_reads", "replies")

# How often a turn looks at the flows directory for a changed file (a few stat calls).
RELOAD_CHECK_S = 2.0
_COMMAND = re.compile(r"^/[a-z_]{1,32}(?:@\w+)?$", re.IGNORECASE)
# Said instead of the handoff's usual text when nobody is on shift (it must exist in every
# locale: a `safety.*` key, checked by the linter).
UNATTENDED_KEY = "safety.no_counselor"
# "No new replies yet": a door that waits for the counselor's line says it only if none came.
NO_REPLIES_KEY = "live.no_replies"
# Said to a sender over an inbound limit (`bot.inbound_limits`): calm, with the emergency numbers.
OVER_LIMIT_KEY = "safety.slow_down"
# Texts that promise a person, and what is said instead while nobody is on shift (issue 18:
# every text that promises a person must be true when it is said). None: the handoff's own
# unattended answer, with the receipt (`UNATTENDED_KEY`).
_PROMISES_A_PERSON: dict[str, str | None] = {
    "safety.handoff": None,
    "counselor.left": None,
    "safety.emergency": "safety.emergency_unattended",
}
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
    # A handoff is open (waiting for a counselor, or chatting): a door that cannot push keeps
    # asking for replies (the web page polls; KakaoTalk offers a "check for replies" button).
    relay: bool = False
    # A counselor has joined: the victim's words of this turn went to them, not to the flow.
    live: bool = False
    # A turn of the chat with (or the wait for) a counselor that handed out nothing from them:
    # a door that can keep the request open a while (Kakao's callback) may wait for their line.
    awaits_reply: bool = False
    # The turn did not run (Redis unreachable or out of connections, an unexpected error): the
    # one message says so. A door whose client retries (the web chat) answers 503 instead, so
    # the same message is sent again rather than lost (issue 18).
    failed: bool = False
    # The conversation's triage level after the step (0-3: danger, self-harm, sextortion and
    # minors are above 0): a door under its platform's outbound cap sends higher first.
    priority: int = 0


@dataclass
class _Outcome:
    quick_exit: bool = False
    delete_inbound: bool = False
    values: dict[str, str] = field(default_factory=dict)
    # Counselors on shift, asked once per turn (None: not asked yet).
    on_shift: int | None = None


class ConversationRuntime:
    def __init__(
        self,
        redis: Redis,
        flows: FlowSource,
        sessions: SessionStore,
        reports: ReportSender,
        *,
        receipts: ReceiptHasher,
        clock: Callable[[], float] = time.time,
        reload_check_s: float = RELOAD_CHECK_S,
        live: VictimSide | None = None,
        shifts: ShiftBoard | None = None,
        limits: InboundLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Without `live`, a handoff is a sealed request only: no reply key, no live chat.
        Without `limits`, nothing is counted (flow tests, benches of the pipeline alone).
        `metrics`: the node's instruments, which the doors count their updates on too."""
        self.metrics = metrics if metrics is not None else Metrics()
        self._redis = redis
        self._limits = limits
        self._live = live
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

    def sender(
        self, channel: str, pseudonym: Pseudonym, remote: str | None = None
    ) -> Sender | None:
        """Whom the inbound limits count for a request: `pseudonym` is the sender's
        `Purpose.RATE_LIMIT` one, `remote` the client address (hashed at once); None: no
        limits."""
        if self._limits is None:
            return None
        return self._limits.sender(channel, pseudonym, remote)

    async def over_limit(self, inbound: Inbound, sender: Sender | None) -> Turn | None:
        """Count one inbound against the sender's limits: the calm answer when it is over them,
        None when it may go on. Safety words and the way out always go on."""
        if sender is None or self._limits is None or await self._limits.admit(sender):
            return None
        if self._urgent(inbound):
            return None
        log.info("inbound refused: over the %s limits", sender.channel)
        return self._slow_down(inbound)

    def _urgent(self, inbound: Inbound) -> bool:
        """What is answered whatever the limits: words triage acts on, and the way out."""
        if inbound.button == QUICK_EXIT_BUTTON:
            return True
        text = inbound.text or ""
        word = text.strip().split(maxsplit=1)[0:1]
        if word and word[0].lower() in BUILT_IN_EXITS:
            return True
        return bool(self._flows.entry().triage.scan(text))

    def _slow_down(self, inbound: Inbound) -> Turn:
        text = self.text(OVER_LIMIT_KEY, inbound.language)
        return Turn((Outbound(text, (), OVER_LIMIT_KEY),))

    async def handle(
        self,
        inbound: Inbound,
        *,
        once: Once | None = None,
        sender: Sender | None = None,
        record: Callable[[Turn], tuple[str, bytes, int]] | None = None,
        replies: Callable[[Turn], Replies | None] | None = None,
        exit_mark: ExitMark | None = None,
    ) -> Turn:
        """One turn. `once`: a claim on the input (a Telegram update) taken with the lock;
        `OnceRefusedError`, and nothing done, when it is someone else's. `sender`: whom the
        inbound limits count (`sender()`); over them, the victim is told calmly to slow down
        and nothing else happens, unless she wrote safety words or asked to leave. `record`:
        a key, value and lifetime made from the turn's answer, written with its session
        (`HeldSession.record`). `replies`: what the write does to the chat's pending replies
        (`HeldSession.replies`: the Telegram door keeps a stepped turn's replies with its
        step, so they outlive the worker). `exit_mark`: the input's place in its chat;
        `ExitedError`, and nothing done, when it came before the chat's last quick exit."""
        started = time.perf_counter()
        blocked = self._blocked_key(inbound)
        try:
            refused = await self.over_limit(inbound, sender)
            if refused is not None:
                self.metrics.turn(inbound.channel, "limited", time.perf_counter() - started)
                return refused
            fast = await self._live_line(inbound, once, blocked)
            if fast is not None:
                self.metrics.turn(inbound.channel, "answered", time.perf_counter() - started)
                return fast
            hold = self._sessions.hold(
                inbound.pseudonym, once=once, blocked=blocked, exit_mark=exit_mark
            )
            async with hold as held:
                if (
                    held.session is None
                    and sender is not None
                    and not await self._new_allowed(inbound, sender)
                ):
                    turn = self._slow_down(inbound)  # the hold ends without a write
                    self.metrics.turn(inbound.channel, "limited", time.perf_counter() - started)
                    return turn
                turn = await self._handle_locked(inbound, held)
                if record is not None:
                    held.record(*record(turn))
                if replies is not None and (pending := replies(turn)) is not None:
                    held.replies(pending)
            self.metrics.turn(inbound.channel, "answered", time.perf_counter() - started)
            return turn
        except BlockedError:
            return Turn((Outbound(self.text("common.blocked", inbound.language)),))
        except (OnceRefusedError, ExitedError):
            self.metrics.turn(inbound.channel, "refused", time.perf_counter() - started)
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
        self.metrics.turn(inbound.channel, "unavailable", time.perf_counter() - started)
        return Turn((self._unavailable(inbound),), failed=True)

    @staticmethod
    def _blocked_key(inbound: Inbound) -> str | None:
        """The key that says a counselor blocked this sender (`backend/blocks.py`): then a
        neutral answer with the emergency numbers, and nothing reaches the flow or the centre.
        Read with the session, in the turn's first round trip (`SessionStore.hold`, `peek`);
        the inbound limits count the sender first. None: nothing to check (no blocking
        pseudonym, or the quick exit, which still works in case a victim was blocked by
        mistake)."""
        if inbound.blocking is None or inbound.button == QUICK_EXIT_BUTTON:
            return None
        if (inbound.text or "").strip().lower() in BUILT_IN_EXITS:
            return None
        return redis_keys.blocked_key(inbound.blocking)

    async def _new_allowed(self, inbound: Inbound, sender: Sender) -> bool:
        if self._limits is None or await self._limits.admit_new_conversation(sender):
            return True
        if self._urgent(inbound):
            return True
        log.info("new conversation refused: over the %s limit per address", sender.channel)
        return False

    def text(self, key: str, language_hint: str | None) -> str:
        """A shared `common.*` text for what a door says outside any flow step (a file it cannot
        take, a failure after the turn), so every victim-facing word stays in the locales an
        administrator edits. Reads the current bundle's translations; touches no session.
        """
        texts = self._flows.entry().texts
        return texts.get(key, texts.language_for(language_hint))

    def offered_languages(self) -> list[str]:
        """The languages a victim may choose: those whose locale holds every safety text the
        fallback language has (what to do in danger, how to leave, where help is), whatever
        else falls back to English."""
        texts = self._flows.entry().texts
        safety = {k for k in texts.locales[texts.fallback].texts if k.startswith(SAFETY_PREFIX)}
        return [
            language
            for language, locale in texts.locales.items()
            if safety <= {k for k, v in locale.texts.items() if v}
        ]

    def _unavailable(self, inbound: Inbound) -> Outbound:
        return Outbound(self.text("common.unavailable", inbound.language))

    async def _refresh_flows(self) -> None:
        now = self._clock()
        if now - self._checked_at >= self._reload_check_s:
            self._checked_at = now
            if await self._flows.follow():
                log.info("flows reloaded: version %s", self._flows.entry().version)

    async def _handle_locked(self, inbound: Inbound, held: HeldSession) -> Turn:
        await self._refresh_flows()
        session = held.session
        bundle = await self._flows.pinned(session.version) if session is not None else None
        now = self._clock()
        if session is not None and bundle is not None and session.handoff_case is not None:
            answered = await self._relay_turn(session, bundle, inbound, now, held)
            if answered is not None:
                return answered
        if session is None or bundle is None:
            bundle = self._flows.entry()
            ctx = _context(bundle, now, inbound)
            fresh = bundle.new_session(inbound, secrets.token_hex(16))
            if session is not None:  # its flow version is gone; an open handoff is not
                fresh.reply_key, fresh.handoff_case = session.reply_key, session.handoff_case
                fresh.live = session.live
            stepping = time.perf_counter()
            result = engine.start(bundle, fresh, ctx, inbound)
        else:
            ctx = _context(bundle, now, inbound)
            if inbound.text and engine.waits_for_receipt(bundle, session):
                ctx = replace(ctx, receipt_known=await self._receipt_known(inbound.text))
            stepping = time.perf_counter()
            result = engine.step(bundle, session, inbound, ctx)
        self.metrics.flow_step(time.perf_counter() - stepping)
        outcome = await self._act(bundle, result, now, inbound.pseudonym, inbound.blocking)
        after = result.session
        waiting: list[Outbound] = []
        if outcome.quick_exit and after.handoff_case is not None and self._live is not None:
            await self._live.victim_left(inbound.pseudonym, after.handoff_case)
            after.handoff_case, after.live = None, False
        elif after.handoff_case is not None:
            waiting = await self._held(inbound)
        # Written with the lock's release, when the hold ends. An open handoff keeps the
        # session after the flow's end: the relay needs its reply key.
        if after.ended and after.handoff_case is None:
            held.delete()
        else:
            held.save(after)
        filled = [_fill(m, outcome.values) for m in result.messages]
        messages = await self._true_now(bundle, after.language, filled, outcome)
        return Turn(
            (*waiting, *messages),
            quick_exit=outcome.quick_exit,
            delete_inbound=outcome.delete_inbound,
            effects=result.effects,
            ended=after.ended,
            relay=after.handoff_case is not None,
            priority=after.priority,
        )

    async def _relay_turn(
        self, session: Session, bundle: Bundle, inbound: Inbound, now: float, hold: HeldSession
    ) -> Turn | None:
        """A turn while a handoff is open, when it is not the flow's: "any replies?"; once a
        counselor has joined, the victim's words; and while she waits after the flow ended, her
        texts too, kept on the case's transcript for the counselor who takes it (not a restart
        of the flow, which a victim in crisis would read as being sent back to the start).
        None: the flow takes it (the way out, other commands, buttons while still waiting, and
        anything while the flow is still asking its questions)."""
        live = self._live
        case_id = session.handoff_case
        if live is None or case_id is None:
            return None
        language = session.language
        if inbound.button == CHECK_BUTTON:
            held = await self._held(inbound)
            if held:
                return Turn(tuple(held), relay=True, live=session.live, priority=session.priority)
            nothing = Outbound(bundle.texts.get("live.no_replies", language), (), NO_REPLIES_KEY)
            return Turn(
                (nothing,),
                relay=True,
                live=session.live,
                awaits_reply=True,
                priority=session.priority,
            )
        if inbound.button == QUICK_EXIT_BUTTON or _is_command(inbound.text):
            return None
        waiting = not session.live
        # While she waits, her words go to the counselor once the flow asks nothing it could
        # read them as: after its end, or at a step of buttons only (what happens next, after
        # asking; issue 18), where they would otherwise get "please use the buttons".
        flows_turn = inbound.button is not None or bool(inbound.attachments)
        if waiting and (flows_turn or (not session.ended and engine.takes_text(bundle, session))):
            return None
        accepted = False
        if inbound.button is not None:
            said = [Outbound(bundle.texts.get("live.in_chat", language))]
        elif inbound.attachments:
            said = [Outbound(bundle.texts.get("live.text_only", language))]
        else:
            text = (inbound.text or "").strip()
            # Her words reach the counselor, and triage reads them first (issue 12: a victim
            # waiting or chatting who wrote she wanted to die was told "saved" and no more).
            ctx = Context(int(now), bundle.hours.is_open(datetime.fromtimestamp(now, UTC)))
            read = engine.triage(bundle, session, text, ctx)
            session = read.session
            guidance = await self._true_now(bundle, language, list(read.messages), _Outcome())
            try:
                await live.from_victim(case_id, text)
            except ValueError:
                key = "common.too_long" if text else "common.empty"
                said = [*guidance, Outbound(bundle.texts.get(key, language))]
            else:
                accepted = True
                saved = [Outbound(bundle.texts.get("live.saved", language))] if waiting else []
                said = [*guidance, *saved]
            await self._alert(session, read.effects)
        session.seen_s = int(now)
        hold.save(session)
        held = await self._held(inbound)
        listen = accepted and not held
        return Turn(
            (*held, *said),
            relay=True,
            live=session.live,
            awaits_reply=listen,
            priority=session.priority,
        )

    async def _live_line(
        self, inbound: Inbound, once: Once | None, blocked: str | None
    ) -> Turn | None:
        """The common turn of a live chat, a victim's words that triage finds nothing in, with
        its writes in one round trip and no lock: the session peeked (a read), the turn decided
        on it as `_relay_turn` would, then the line, the session and the held lines in one
        script that writes only if no turn holds the conversation and its session has not moved
        (`VictimSide.line_unlocked`). None: not such a turn, or it moved; the locked turn then
        does it from the start (nothing was written)."""
        live = self._live
        text = (inbound.text or "").strip()
        if (
            live is None
            or inbound.button is not None
            or inbound.attachments
            or not text
            or _is_command(inbound.text)
        ):
            return None
        chatting = await self._peek_live(inbound.pseudonym, blocked)
        if chatting is None:
            return None
        peeked, bundle = chatting
        now = self._clock()
        ctx = Context(int(now), bundle.hours.is_open(datetime.fromtimestamp(now, UTC)))
        read = engine.triage(bundle, peeked.session, text, ctx)
        if read.effects or read.messages:
            return None  # triage matched: guidance and alerts, the locked turn's
        after = read.session
        after.seen_s = int(now)
        try:
            lines = await live.line_unlocked(
                self._sessions,
                inbound.pseudonym,
                peeked,
                after,
                text,
                take_held=inbound.channel in live.holding_channels,
                once=once,
            )
        except ValueError:
            return None  # too long: the locked turn says so
        if lines is None:
            return None
        held = tuple(Outbound(line.text) for line in lines)
        return Turn(held, relay=True, live=True, awaits_reply=not held)

    async def _peek_live(
        self, pseudonym: Pseudonym, blocked: str | None
    ) -> tuple[Peeked, Bundle] | None:
        """The session, unlocked, and its flows, if a counselor is chatting with it
        (`BlockedError` if `blocked` exists)."""
        peeked = await self._sessions.peek(pseudonym, blocked=blocked)
        if peeked is None or not peeked.session.live or peeked.session.handoff_case is None:
            return None
        await self._refresh_flows()
        bundle = await self._flows.pinned(peeked.session.version)
        return None if bundle is None else (peeked, bundle)

    async def _held(self, inbound: Inbound) -> list[Outbound]:
        if self._live is None or inbound.channel not in self._live.holding_channels:
            return []
        return await self._live.hand_out(inbound.pseudonym)

    async def held_for(self, pseudonym: Pseudonym) -> tuple[list[Outbound], bool]:
        """For a page asking for replies between turns (the web chat's long poll): the held
        lines, and whether a handoff is still open (keep asking). No lock: taking is atomic."""
        session = await self._sessions.load(pseudonym)
        relay = session is not None and session.handoff_case is not None
        if self._live is None:
            return [], relay
        return await self._live.hand_out(pseudonym), relay

    async def join(self, pseudonym: Pseudonym, case_id: str) -> Session | None:
        """The relay: a counselor joined `case_id`; the session now in live mode, or None if the
        conversation is gone or has moved on to another case."""
        return await self._set_live(pseudonym, case_id, live=True)

    async def leave(self, pseudonym: Pseudonym, case_id: str) -> Session | None:
        """The relay: the counselor ended `case_id`'s chat; the session, back with the flow.

        The session keeps its case (and the relay its link): a counselor who ended the chat by
        mistake starts it again while the victim is still there, and a later JOINED finds the
        conversation. Only the victim's way out, a new handoff or the session's expiry end
        that link."""
        return await self._set_live(pseudonym, case_id, live=False)

    async def _set_live(self, pseudonym: Pseudonym, case_id: str, *, live: bool) -> Session | None:
        # The same hold a turn takes: the lock and the read in one round trip, the write and
        # the unlock in another.
        async with self._sessions.hold(pseudonym) as held:
            session = held.session
            if session is None or session.handoff_case != case_id:
                return None
            session.live = live
            held.save(session)
            return session

    async def session_of(self, pseudonym: Pseudonym) -> Session | None:
        """Read-only, no lock: what the relay needs to open a line (the reply key)."""
        return await self._sessions.load(pseudonym)

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
        bundle = await self._flows.pinned(session.version)
        return None if bundle is None else engine.files_keep(bundle, session)

    def seal_file(self, data: bytes | bytearray) -> bytes:
        """A screenshot sealed to the centre key: the bot cannot open it again."""
        return self._reports.seal_file(data)

    async def end(self, pseudonym: Pseudonym) -> bool:
        """End a conversation from outside the flow (the victim blocked the bot); True if one
        was under way."""
        async with self._sessions.hold(pseudonym) as held:
            session = held.session
            if session is not None and session.handoff_case and self._live is not None:
                await self._live.victim_left(pseudonym, session.handoff_case)
            held.delete()
        return session is not None

    async def flag_unreachable(self, case_ids: list[str]) -> None:
        """Tell the counselors of these cases that the victim cannot be reached (they blocked
        the bot): an event on the reports stream, stored as a flag on each case."""
        if case_ids:
            key = f"unreachable:{secrets.token_hex(16)}"
            await self._reports.send_event(key, redis_keys.EVENT_VICTIM_UNREACHABLE, case_ids)

    async def _act(
        self,
        bundle: Bundle,
        result: StepResult,
        now: float,
        pseudonym: Pseudonym,
        blocking: Pseudonym | None = None,
    ) -> _Outcome:
        """Carry out the step's effects before anything is said, so "received" is true."""
        outcome = _Outcome()
        language = result.session.language
        for effect in result.effects:
            if isinstance(effect, SubmitReport):
                await self._reports.send(effect, blocking=blocking)
                log.info("report sealed and queued as case %s", effect.case_id)
                # Who will read it, as true now: a counselor on duty, or the first one back
                # (issue 18: "a counselor is looking at it" was said with nobody on shift).
                on_shift = await self._on_shift(outcome)
                who = "report.read_on_shift" if on_shift else "report.read_no_shift"
                outcome.values["who_reads"] = bundle.texts.get(who, language)
            elif isinstance(effect, RequestHandoff):
                on_shift = await self._on_shift(outcome)
                position = await self._handoff(
                    effect, now, result.session, pseudonym, on_shift=on_shift, blocking=blocking
                )
                outcome.values["position"] = str(position)
                # Each counselor on shift takes one case at a time: more of them, shorter waits.
                per_case = bundle.hours.minutes_per_case
                outcome.values["wait"] = str(-(-position * per_case // max(1, on_shift)))
                how = how_replies_key(effect.channel)
                outcome.values["reply_how"] = bundle.texts.get(how, language)
                if on_shift == 0:
                    # Told honestly; and how a reply would come if a counselor returns meanwhile.
                    unattended = await self._unattended(bundle, result, effect)
                    outcome.values[_UNATTENDED] = f"{unattended} {outcome.values['reply_how']}"
            elif isinstance(effect, IssueReceipt):
                await self._issue_receipt(effect)
            elif isinstance(effect, CaseRequest):
                found = await self._case_request(effect)
                key = "receipt.status_sent" if found is not None else "receipt.status_unknown"
                outcome.values["request_status"] = bundle.texts.get(key, language)
                if found is not None and effect.kind == "read_replies":
                    outcome.values["replies"] = _replies_text(bundle, language, found)
            elif isinstance(effect, RecordFeedback):
                await self._redis.hincrby(redis_keys.FEEDBACK_COUNTS, effect.rating[:32], 1)
            elif isinstance(effect, RaisePriority):
                # The session keeps the level; every later report and handoff carries it.
                log.info("conversation priority raised to %d (%s)", effect.priority, effect.reason)
            elif isinstance(effect, ShowResources):
                log.debug("showed %d resources", len(effect.resource_ids))
            elif isinstance(effect, QuickExit):
                outcome.quick_exit = True
            elif isinstance(effect, DeleteInbound):
                outcome.delete_inbound = True
        await self._alert(result.session, result.effects)
        return outcome

    async def _on_shift(self, outcome: _Outcome) -> int:
        """How many counselors are on shift, asked once a turn; without a shift board (flow
        tests, benches) one is assumed."""
        if outcome.on_shift is None:
            outcome.on_shift = 1 if self._shifts is None else await self._shifts.count()
        return outcome.on_shift

    async def _true_now(
        self, bundle: Bundle, language: str, messages: list[Outbound], outcome: _Outcome
    ) -> list[Outbound]:
        """The messages with every promise of a person made true at this moment: while nobody
        is on shift, a text that says a counselor was asked or will come is said instead in
        its unattended words (issue 18: "we have asked a counselor to come to you first" was
        said with nobody there)."""
        if not any(m.key in _PROMISES_A_PERSON for m in messages):
            return messages
        if await self._on_shift(outcome):
            return messages
        true: list[Outbound] = []
        # Triage asked for a counselor in this very turn (its guidance promised one): the
        # unattended answer with the receipt follows the guidance, once.
        asked_now = not any(_PROMISES_A_PERSON.get(m.key, "") is None for m in messages)
        for message in messages:
            if message.key not in _PROMISES_A_PERSON:
                true.append(message)
                continue
            instead = _PROMISES_A_PERSON[message.key]
            if instead is not None:
                text = bundle.texts.get(instead, language)
                true.append(Outbound(text, message.buttons, instead))
            if (instead is None or asked_now) and _UNATTENDED in outcome.values:
                # The request asked for now: saved, and the receipt to come back with.
                true.append(Outbound(outcome.values[_UNATTENDED], message.buttons, UNATTENDED_KEY))
                asked_now = False
            elif instead is None:  # pragma: no cover - a flow says it only after asking
                text = bundle.texts.get("safety.after_hours", language)
                true.append(Outbound(text, message.buttons, "safety.after_hours"))
        return true

    async def _alert(self, session: Session, effects: tuple[Effect, ...]) -> None:
        """Triage matched: the conversation's open cases (its handoff, its report) rise to the
        rule's priority, in the backend's store (an event intake applies) and in the handoff
        queue victims are told their place from; a counselor's live panel gets the flag."""
        alerts = [e for e in effects if isinstance(e, TriageAlert)]
        if not alerts:
            return
        priority = max(a.priority for a in alerts)
        handoff = session.handoff_case
        report = session.slots.get(CASE_SLOT)
        # One case when the handoff joined the report (issue 18): named once.
        named = (handoff, report if isinstance(report, str) else None)
        cases = list(dict.fromkeys(c for c in named if c))
        if cases and priority > 0:
            await self._reports.send_priority(cases, priority)
        if handoff is not None and priority > 0:
            await waiting_line.raise_priority(self._redis, handoff, priority)
        if handoff is not None and self._live is not None:
            for alert in alerts:
                await self._live.flag(handoff, alert.flag)
        log.info("triage matched %d rule(s); priority %d", len(alerts), priority)

    async def _unattended(self, bundle: Bundle, result: StepResult, effect: RequestHandoff) -> str:
        """What a victim is told when nobody is on shift: that honestly, the emergency numbers
        (in the text) and a receipt to come back with. The code is the conversation's own (the
        one a report in it gives too); if it has none yet, it is issued now for this request.

        The request waits in the queue like any other, by priority and then arrival: the first
        counselor back finds it above every later request of its priority. It gets no higher
        priority, which would put a plain request above a later sextortion in progress.
        """
        session = result.session
        code = str(session.slots.get(RECEIPT_SLOT) or "")
        if not code:
            code = engine.receipt_code(session.conversation_id)
            session.slots[RECEIPT_SLOT] = code
            await self._issue_receipt(IssueReceipt(effect.case_id, code))
        return bundle.texts.render(UNATTENDED_KEY, session.language, {"receipt": code})

    async def _handoff(
        self,
        effect: RequestHandoff,
        now: float,
        session: Session,
        pseudonym: Pseudonym,
        *,
        on_shift: int,
        blocking: Pseudonym | None = None,
    ) -> int:
        """Seal the request onto the reports stream with its priority; the queue position.

        A request that joins the conversation's case (`RequestHandoff.joins`) goes out marked so:
        the backend attaches it to that case (its report, or its earlier request), which keeps
        its category and its place in the waiting line (`enqueue` keeps a place once given)."""
        unattended = "; nobody was on shift" if on_shift == 0 else ""
        answers = {**effect.answers, "request": f"counselor ({effect.reason}{unattended})"}
        if self._live is not None:
            answers[REPLY_KEY_ANSWER] = await self._live.open_relay(
                session, pseudonym, effect.case_id
            )
        await self._reports.send(
            SubmitReport(
                idempotency_key=effect.idempotency_key,
                case_id=effect.case_id,
                category=effect.category,
                priority=effect.priority,
                language=effect.language,
                channel=effect.channel,
                answers=answers,
                age_group=effect.age_group,
            ),
            blocking=blocking,
            joins=bool(effect.joins),
        )
        joined = " (joined)" if effect.joins else ""
        log.info(
            "handoff requested as case %s%s, priority %d", effect.case_id, joined, effect.priority
        )
        return await waiting_line.enqueue(self._redis, effect.case_id, effect.priority, now)

    async def _issue_receipt(self, effect: IssueReceipt) -> None:
        """Remember the code's case by its keyed digest, publish the reply key it derives, so
        counselors can leave replies only this code opens (backend/core/replies.py), and tell the
        backend the digest, so a counselor can find the case by a code read out to them."""
        code_digest = self._receipts.digest(effect.code)
        reply_key = self._receipts.reply_private_key(effect.code, DigestScheme.KEYED)
        if code_digest is None or reply_key is None:  # pragma: no cover - the step makes codes
            raise ValueError("malformed receipt code")
        # One round trip for the three (each a write behind an fsync on the embedded Redis).
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                redis_keys.receipt_key(code_digest), effect.case_id, ex=redis_keys.RECEIPT_TTL_S
            )
            replies.queue_receipt(pipe, effect.case_id, code_digest, reply_key.public_key())
            self._reports.queue_receipt(pipe, effect.case_id, code_digest)
            await pipe.execute()

    async def _find_receipt(self, code: str) -> tuple[str, DigestScheme] | None:
        """The case of a code and the scheme it was issued under: the keyed digest first; a
        code issued before issue 14 only under its Argon2id digest (kept at most
        `redis_keys.RECEIPT_TTL_S`, so this second look ends with the last of them)."""
        for scheme in DigestScheme:
            if scheme is DigestScheme.KEYED:
                code_digest = self._receipts.digest(code)
            else:
                code_digest = await self._receipts.legacy_digest(code)
            if code_digest is None:
                return None
            found = await self._redis.get(redis_keys.receipt_key(code_digest))
            if isinstance(found, bytes):
                return found.decode(), scheme
        return None

    async def _receipt_known(self, typed: str) -> bool:
        """Whether a typed code is one the centre issued (and not erased since): its digest
        has a case, under either digest scheme. Said at once when not, before the victim
        chooses what to do with it."""
        return await self._find_receipt(typed.strip()) is not None

    async def _case_request(self, effect: CaseRequest) -> list[str] | None:
        """A returning victim's request, sealed onto the reports stream for the case's
        counselors, linked to the case of the receipt; the counselors' replies for the victim,
        opened with the key only the code derives. None when the code is unknown (nothing is
        sent)."""
        found = await self._find_receipt(effect.code)
        if found is None:
            return None
        case_id, scheme = found
        answers: dict[str, str | int] = {"request": effect.kind, "case": case_id}
        if effect.text:
            answers["addition"] = effect.text
        texts: list[str] = []
        reply_key = self._receipts.reply_private_key(effect.code, scheme)
        if effect.kind == "read_replies" and reply_key is not None:
            for sealed in await replies.waiting(self._redis, case_id):
                text = replies.open_for_victim(sealed, reply_key, case_id)
                if text is not None:
                    texts.append(text)
            answers["replies_shown"] = len(texts)
        await self._reports.send(
            SubmitReport(
                idempotency_key=effect.idempotency_key,
                case_id=hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:32],
                category="follow_up",
                priority=max(1, effect.priority),
                language=effect.language,
                channel=effect.channel,
                answers=answers,
                follows=case_id,
            )
        )
        if effect.kind == "erase":
            # In clear (a case id is a routing fact), so the case is marked for supervisors
            # without anyone opening the request (issue 12).
            key = "erase:" + hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:32]
            await self._reports.send_event(key, redis_keys.EVENT_ERASE_REQUESTED, [case_id])
        log.info("request %s on a receipt queued", effect.kind)
        return texts


def _replies_text(bundle: Bundle, language: str, texts: list[str]) -> str:
    if not texts:
        return bundle.texts.get("receipt.replies_none", language)
    intro = bundle.texts.get("receipt.replies_intro", language)
    return "\n\n".join([intro, *texts])


def _is_command(text: str | None) -> bool:
    """A command word (/exit, /help): the flow's, also in a live chat; other text is the
    victim's words for the counselor, even one that starts with a slash."""
    word = (text or "").strip().split(maxsplit=1)[0:1]
    return bool(word) and (word[0].lower() in BUILT_IN_EXITS or _COMMAND.match(word[0]) is not None)


def _context(bundle: Bundle, now: float, inbound: Inbound) -> Context:
    """What the flow may know: the clock, the service hours, and whether this channel can carry
    a file (a flow never asks for screenshots the victim cannot send: issue 18)."""
    is_open = bundle.hours.is_open(datetime.fromtimestamp(now, UTC))
    return Context(int(now), is_open, files=inbound.channel in FILE_CHANNELS)


def _fill(message: Outbound, values: dict[str, str]) -> Outbound:
    if "{" not in message.text:
        return message
    text = message.text
    # The replies last: a counselor's words are shown as written, never filled in themselves.
    for name in RUNTIME_PLACEHOLDERS:
        default = "" if name == "replies" else "-"
        text = text.replace("{" + name + "}", values.get(name, default))
    text = re.sub(r"\n{3,}", "\n\n", text).strip() if "\n" in text else text
    return Outbound(text, message.buttons, message.key)
