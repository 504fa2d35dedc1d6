"""How Telegram updates come in: parsed without a poison pill, and ordered per chat.

`SanitizingRequest` guards long polling. python-telegram-bot parses a getUpdates batch in one
go: one update it cannot parse fails the whole batch, the offset never moves past it, and the
bot is stuck re-fetching it forever, logging the raw batch (the victims' texts) at CRITICAL on
each try. This request layer checks every update before PTB sees it and replaces one that
cannot be parsed with a bare `{"update_id": n}`, which the door treats as unknown, so the
offset moves on and nothing of its content reaches a log.

`ChatOrderProcessor` lets different chats run concurrently while one chat's updates run one
after another, in the order Telegram sent them. PTB starts one task per update, in order; each
task registers itself behind its chat's previous task before its first `await`, so the order is
fixed at arrival and does not depend on how the concurrency semaphore wakes its waiters.
A turn lets its chat's next update begin as soon as it has stepped and taken its place in
`ReplyOrder` (`release_chat`): the next turn steps while the replies still go out one a
second, and its replies follow them. So a webhook update is answered in milliseconds, and
Telegram, which sends one chat's updates one after another, hands over the next at once.
A quick exit (`is_quick_exit`) is the exception: it waits neither for its chat's earlier
updates nor for the semaphore, and the earlier updates still waiting are never handled
(issue 12: someone may be taking the phone from her hand).

The concurrency limit (`max_concurrent_updates`, PTB's semaphore) bounds the turns stepping at
once, each holding a Redis connection; a turn gives its slot back once stepped, with its chat's
order. Its replies may then wait minutes for Telegram's cap in a surge (issue 14), and while
they held the slots, new conversations waited for one first come, first served, a victim in
danger among them: the priority the replies have under the cap could not help her before her
turn had even stepped.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DefaultValue
from telegram.ext import BaseUpdateProcessor
from telegram.request import HTTPXRequest, RequestData

from backend.flows.engine import BUILT_IN_EXITS, QUICK_EXIT_BUTTON

log = logging.getLogger(__name__)

_DEFAULT_NONE: Any = DefaultValue(None)


def parses_as_update(update: object) -> bool:
    if not isinstance(update, dict):
        return False
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return False
    try:
        Update.de_json(update, None)
    except Exception:
        return False
    return True


def sanitize_updates(payload: bytes) -> bytes:
    """A getUpdates answer in which every update parses; see the module docstring."""
    try:
        body = json.loads(payload)
    except ValueError:
        return payload  # not ours to judge: PTB reports an unreadable answer as an error
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        return payload
    kept: list[object] = []
    for update in body["result"]:
        if parses_as_update(update):
            kept.append(update)
            continue
        update_id = update.get("update_id") if isinstance(update, dict) else None
        log.warning("telegram sent an update that cannot be parsed; its content is dropped")
        if isinstance(update_id, int) and not isinstance(update_id, bool):
            kept.append({"update_id": update_id})
    body["result"] = kept
    return json.dumps(body).encode()


class SanitizingRequest(HTTPXRequest):
    """The request object PTB uses for getUpdates only (`get_updates_request`)."""

    async def do_request(  # noqa: PLR0917 - PTB's signature, called positionally by PTB
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = _DEFAULT_NONE,
        write_timeout: Any = _DEFAULT_NONE,
        connect_timeout: Any = _DEFAULT_NONE,
        pool_timeout: Any = _DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        status, payload = await super().do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        if status == 200:
            payload = sanitize_updates(payload)
        return status, payload


def chat_of(update: object) -> int | None:
    """The chat an update belongs to (in memory only), or None for chat-less updates."""
    if isinstance(update, Update) and update.effective_chat is not None:
        chat_id: int = update.effective_chat.id
        return chat_id
    return None


def is_quick_exit(update: object) -> bool:
    """/exit, /stop (with or without the bot's name) or the quick-exit button, in a private
    chat: the way out, whatever the flow says."""
    if not isinstance(update, Update):
        return False
    query = update.callback_query
    if query is not None:
        return query.data == QUICK_EXIT_BUTTON
    message = update.message
    if message is None or message.text is None or message.chat.type != "private":
        return False
    words = message.text.strip().split(maxsplit=1)
    return bool(words) and words[0].lower().split("@")[0] in BUILT_IN_EXITS


_release: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "telegram_chat_release", default=None
)


def release_chat() -> None:
    """The update being handled has stepped and taken its reply place: its chat's next update
    may begin. Harmless outside `ChatOrderProcessor` or when called twice."""
    release = _release.get()
    if release is not None:
        release()


class ReplyOrder:
    """One chat's replies go out in the order its turns stepped. A turn takes its place right
    after its step (`place`, synchronous), then calls `release_chat`, then sends inside
    `async with` the place; in memory only."""

    def __init__(self) -> None:
        self._tails: dict[int, asyncio.Future[None]] = {}

    def place(self, chat: int) -> _Place:
        previous = self._tails.get(chat)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat] = mine
        return _Place(self._tails, chat, previous, mine)


class _Place:
    """A turn's place in its chat's reply order: entered once the previous one is done."""

    def __init__(
        self,
        tails: dict[int, asyncio.Future[None]],
        chat: int,
        previous: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> None:
        self._tails, self._chat, self._previous, self._mine = tails, chat, previous, mine

    async def __aenter__(self) -> None:
        if self._previous is not None:
            try:
                await asyncio.shield(self._previous)
            except BaseException:
                self._done()
                raise

    async def __aexit__(self, *_exc: object) -> None:
        self._done()

    def _done(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)
        if self._tails.get(self._chat) is self._mine:
            del self._tails[self._chat]


def _close(coroutine: Awaitable[Any]) -> None:
    close = getattr(coroutine, "close", None)
    if close is not None:
        close()


class _Slot:
    """One of the processor's concurrency slots, given back at most once."""

    __slots__ = ("_held", "_semaphore")

    def __init__(self, semaphore: asyncio.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._held = False

    async def take(self) -> None:
        await self._semaphore.acquire()
        self._held = True

    def free(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


class ChatOrderProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        # Chat id -> the future the chat's latest update completes; in memory only.
        self._tails: dict[int, asyncio.Future[None]] = {}
        # Chat id -> how many quick exits it had while updates waited; an update that sees
        # the count change while it waited came before an exit and is dropped.
        self._exits: dict[int, int] = {}
        self._pending: dict[int, int] = {}  # chat id -> its updates not yet finished

    # PTB marks process_update final, but the order must be fixed before its semaphore: a
    # saturated semaphore need not wake one chat's waiters in arrival order.
    async def process_update(  # type: ignore[misc]  # overrides a @final, see above
        self, update: object, coroutine: Awaitable[Any]
    ) -> None:
        chat = chat_of(update)
        if chat is None:
            await super().process_update(update, coroutine)
            return
        jump = is_quick_exit(update)
        if jump:
            self._exits[chat] = self._exits.get(chat, 0) + 1
        exits = self._exits.get(chat, 0)
        self._pending[chat] = self._pending.get(chat, 0) + 1
        previous = None if jump else self._tails.get(chat)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat] = mine
        slot = _Slot(self._semaphore)

        def release() -> None:
            if not mine.done():
                mine.set_result(None)
            slot.free()

        token = _release.set(release)
        try:
            if previous is not None:
                await asyncio.shield(previous)
            if self._exits.get(chat, 0) != exits:
                log.info("telegram update from before a quick exit; dropped")
                _close(coroutine)
            elif jump:
                await coroutine  # ahead of the semaphore too
            else:
                await slot.take()
                await self.do_process_update(update, coroutine)
        finally:
            _release.reset(token)
            release()
            if self._tails.get(chat) is mine:
                del self._tails[chat]
            self._pending[chat] -= 1
            if not self._pending[chat]:
                del self._pending[chat]
                self._exits.pop(chat, None)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await coroutine

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
