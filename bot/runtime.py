"""The conversation runtime: lock, load the session, run one flow step, act, save, reply.

Updates of one conversation are serialised by a Redis lock keyed by its pseudonym, so they are
processed in order across bot workers; different conversations run concurrently.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from backend import streams
from backend.conversation import (
    Effect,
    Inbound,
    Outbound,
    Pseudonym,
    QuickExit,
    StepResult,
    SubmitReport,
)
from backend.flows import engine
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.sessions import SessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """What a channel must do after one inbound: send these, and maybe erase the chat."""

    messages: tuple[Outbound, ...]
    quick_exit: bool = False
    # Every effect of the step, so a door can act on its own ones (e.g. `DeleteInbound`).
    effects: tuple[Effect, ...] = ()
    # The conversation has ended (quick exit, or the flow reached its end).
    ended: bool = False


class ConversationRuntime:
    def __init__(
        self, redis: Redis, flows: FlowRegistry, sessions: SessionStore, reports: ReportSender
    ) -> None:
        self._redis = redis
        self._flows = flows
        self._sessions = sessions
        self._reports = reports

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
        except Exception:
            log.exception("conversation turn failed")
        return Turn((self._unavailable(inbound),))

    def text(self, key: str, language_hint: str | None) -> str:
        """A shared `common.*` text for what a door says outside any flow step (a file it cannot
        take, a failure after the turn), so every victim-facing word stays in the locales an
        administrator edits. Reads the current entry flow's translations; touches no session.
        """
        texts = self._flows.entry().texts
        return texts.get(key, texts.language_for(language_hint))

    def _unavailable(self, inbound: Inbound) -> Outbound:
        return Outbound(self.text("common.unavailable", inbound.language))

    async def _handle_locked(self, inbound: Inbound) -> Turn:
        session = await self._sessions.load(inbound.pseudonym)
        flow = None
        if session is not None:
            flow = self._flows.for_session(session.flow, session.version)
        if session is None or flow is None:
            flow = self._flows.entry()
            session = flow.new_session(inbound, secrets.token_hex(16))
            # /exit with no conversation under way still means "erase this chat now", e.g.
            # after a finished report; it must not greet the victim with a new conversation.
            if _is_quick_exit(flow.spec.commands, inbound):
                result = engine.step(flow, session, inbound)
            else:
                result = engine.start(flow, session)
        else:
            result = engine.step(flow, session, inbound)
        quick_exit = await self._act(result)
        if result.session.ended:
            await self._sessions.delete(inbound.pseudonym)
        else:
            await self._sessions.save(inbound.pseudonym, result.session)
        return Turn(result.messages, quick_exit, result.effects, result.session.ended)

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

    async def _act(self, result: StepResult) -> bool:
        """Carry out the step's effects before anything is said, so "received" is true."""
        quick_exit = False
        for effect in result.effects:
            if isinstance(effect, SubmitReport):
                await self._reports.send(effect)
                log.info("report sealed and queued as case %s", effect.case_id)
            elif isinstance(effect, QuickExit):
                quick_exit = True
        return quick_exit


def _is_quick_exit(commands: Mapping[str, Any], inbound: Inbound) -> bool:
    if inbound.button == "quick_exit":
        return True
    text = (inbound.text or "").strip()
    if not text.startswith("/"):
        return False
    command = commands.get(text.split()[0].lower())
    return getattr(command, "action", None) == "quick_exit"
