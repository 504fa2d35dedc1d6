"""The Telegram door, on python-telegram-bot's `Application` (long polling).

The adapter keeps no Telegram identifier: the user id becomes a keyed pseudonym at once, and
the chat id is needed only to answer within this very update. Issue #4 deepens this door
(webhooks, outbox and rate limits, deletion on /exit, evidence files).

Only new messages and button presses move a conversation on; edits are not new input. Whatever
fails inside a handler reaches one error handler, which tells the victim calmly to try again and
logs nothing but the error's type.
"""

from __future__ import annotations

import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
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
        # MessageHandler also receives `edited_message` updates. An edit is not new input: an
        # earlier message edited at the details step would otherwise be taken as the answer and
        # submitted. Edits get no handler, so they change nothing and say nothing.
        new = filters.UpdateType.MESSAGE
        # Service messages (a pinned message, shared access) are not the victim speaking.
        not_text = ~filters.TEXT & ~filters.StatusUpdate.ALL
        self.application.add_handler(MessageHandler(private & new & filters.TEXT, self._on_text))
        self.application.add_handler(MessageHandler(private & new & not_text, self._on_file))
        self.application.add_handler(CallbackQueryHandler(self._on_button))
        self.application.add_handler(MessageHandler(~private & new, self._refuse_group))
        self.application.add_error_handler(self._on_error)

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

    async def _on_file(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, sticker, voice message, document or anything else that is not text.

        Until evidence intake lands (issue #4) the door cannot take files, so it says so rather
        than stay silent. The file is never fetched (no getFile) and nothing of the message is
        kept or passed to the runtime: the bot must not hold intimate images, and this answer
        leaves the conversation exactly where it was.
        """
        chat = update.effective_chat
        if chat is None:
            return
        user = update.effective_user
        text = self._runtime.text("common.no_files", user.language_code if user else None)
        await self._reply(chat.id, (Outbound(text),))

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
        if chat is None or chat.type not in {ChatType.GROUP, ChatType.SUPERGROUP}:
            return
        try:
            await self.application.bot.send_message(chat.id, PRIVATE_ONLY, protect_content=True)
        finally:
            # Leave even when the refusal could not be sent: nobody should report in front of
            # a group, and the bot must not be spoken to there again.
            await self.application.bot.leave_chat(chat.id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's one error boundary: a victim never meets silence, and the log learns only what
        kind of error it was.

        Neither the exception's message nor its traceback is logged: Bot API errors can quote
        what was sent, HTTP client errors the request URL, and that URL holds the bot token.
        """
        log.error("telegram update failed with %s", type(context.error).__name__)
        if not isinstance(update, Update):
            return
        chat = update.effective_chat
        if chat is None or chat.type != ChatType.PRIVATE:
            return
        user = update.effective_user
        text = self._runtime.text("common.unavailable", user.language_code if user else None)
        try:
            await self._reply(chat.id, (Outbound(text),))
        except TelegramError as exc:
            # Raising here would make PTB log this error with its traceback.
            log.error("telegram could not send the unavailable notice: %s", type(exc).__name__)

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
