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
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DefaultValue
from telegram.ext import BaseUpdateProcessor
from telegram.request import HTTPXRequest, RequestData

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


class ChatOrderProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        # Chat id -> the future the chat's latest update completes; in memory only.
        self._tails: dict[int, asyncio.Future[None]] = {}

    # PTB marks process_update final, but the order must be fixed before its semaphore: a
    # saturated semaphore need not wake one chat's waiters in arrival order.
    async def process_update(  # type: ignore[misc]  # overrides a @final, see above
        self, update: object, coroutine: Awaitable[Any]
    ) -> None:
        chat = chat_of(update)
        if chat is None:
            await super().process_update(update, coroutine)
            return
        previous = self._tails.get(chat)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat] = mine
        try:
            if previous is not None:
                await asyncio.shield(previous)
            await super().process_update(update, coroutine)
        finally:
            mine.set_result(None)
            if self._tails.get(chat) is mine:
                del self._tails[chat]

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await coroutine

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
