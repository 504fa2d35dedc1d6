"""The Telegram door, on python-telegram-bot's `Application` (long polling).

The adapter keeps no Telegram identifier: the user id becomes a keyed pseudonym at once, and
the chat id is needed only to answer within this very update. Issue #4 deepens this door
(webhooks, outbox and rate limits, deletion on /exit, evidence files).
"""

from __future__ import annotations

import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from backend.conversation import Inbound, Outbound
from backend.pseudonyms import Pseudonymizer, Purpose
from bot.runtime import ConversationRuntime

log = logging.getLogger(__name__)

CHANNEL = "telegram"
MAX_MESSAGE_CHARS = 4096
PRIVATE_ONLY = "1:1 대화에서만 이용할 수 있어요. / This service works in private chats only."


def _markup(message: Outbound) -> InlineKeyboardMarkup | None:
    if not message.buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.id)] for b in message.buttons]
    )


class TelegramDoor:
    def __init__(
        self,
        token: str,
        base_url: str | None,
        runtime: ConversationRuntime,
        pseudonymizer: Pseudonymizer,
    ) -> None:
        builder = ApplicationBuilder().token(token).concurrent_updates(False)
        if base_url is not None:
            # A Bot API server serves files beside the methods: <server>/bot<token>/<method> and
            # <server>/file/bot<token>/<path>, as Telegram's own defaults are laid out.
            file_url = base_url.removesuffix("bot") + "file/bot"
            builder = builder.base_url(base_url).base_file_url(file_url)
        self.application: Application = builder.build()  # type: ignore[type-arg]
        self._runtime = runtime
        self._pseudonymizer = pseudonymizer
        private = filters.ChatType.PRIVATE
        self.application.add_handler(MessageHandler(private & filters.TEXT, self._on_text))
        self.application.add_handler(CallbackQueryHandler(self._on_button))
        self.application.add_handler(MessageHandler(~private, self._refuse_group))

    def _inbound(self, update: Update, *, text: str | None, button: str | None) -> Inbound:
        user = update.effective_user
        if user is None:
            raise ValueError("update without a user")
        return Inbound(
            pseudonym=self._pseudonymizer.pseudonym(Purpose.SESSION, CHANNEL, str(user.id)),
            channel=CHANNEL,
            text=text,
            button=button,
            language=user.language_code,
        )

    async def _reply(self, chat_id: int, messages: tuple[Outbound, ...]) -> None:
        for message in messages:
            for start in range(0, len(message.text), MAX_MESSAGE_CHARS):
                last = start + MAX_MESSAGE_CHARS >= len(message.text)
                await self.application.bot.send_message(
                    chat_id,
                    message.text[start : start + MAX_MESSAGE_CHARS],
                    reply_markup=_markup(message) if last else None,
                    protect_content=True,
                )

    async def _on_text(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_chat is None:
            return
        turn = await self._runtime.handle(self._inbound(update, text=message.text, button=None))
        await self._reply(update.effective_chat.id, turn.messages)

    async def _on_button(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or update.effective_chat is None:
            return
        await query.answer()
        if update.effective_chat.type != ChatType.PRIVATE:
            return
        turn = await self._runtime.handle(self._inbound(update, text=None, button=query.data))
        await self._reply(update.effective_chat.id, turn.messages)

    async def _refuse_group(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is not None and chat.type in {ChatType.GROUP, ChatType.SUPERGROUP}:
            await self.application.bot.send_message(
                chat.id,
                PRIVATE_ONLY,
            )

    async def start(self) -> None:
        await self.application.initialize()
        if self.application.updater is None:  # pragma: no cover - the builder makes one
            raise RuntimeError("no updater")
        await self.application.updater.start_polling(allowed_updates=Update.ALL_TYPES)
        await self.application.start()
        log.info("telegram door started (long polling)")

    async def stop(self) -> None:
        if self.application.updater is not None and self.application.updater.running:
            await self.application.updater.stop()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()
