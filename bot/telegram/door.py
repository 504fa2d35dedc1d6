"""The Telegram door, on python-telegram-bot's `Application`: long polling, or a webhook.

The door keeps no Telegram identifier in clear: the user id becomes a keyed pseudonym at once;
the chat id (the reply address) and the ids of messages to erase on /exit live only in the
encrypted, expiring `TelegramChatStore`. Nothing here logs an id, a name or a text.

How an update travels: `SanitizingRequest` (polling) or `handle_webhook` (secret checked)
admits it; `ChatOrderProcessor` keeps one chat's updates in order while chats run
concurrently; `_dispatch` drops a duplicate `update_id` (Redis, across workers) and routes the
rest; the runtime runs one flow step; replies leave through the `TelegramOutbox` (rate limits,
retries, `protect_content`, no parse mode). Whatever fails reaches one error handler, which
tells the victim calmly to try again and logs nothing but the error's type.

Only new messages and button presses move a conversation on; edits are not new input. Groups,
channels and inline queries are refused politely; the bot is for private chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from redis.asyncio import Redis
from telegram import (
    CallbackQuery,
    ChatMember,
    ChatMemberUpdated,
    InlineQuery,
    InlineQueryResultsButton,
    Message,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ContextTypes,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest

from backend.core import redis_keys
from backend.core.conversation import (
    Attachment,
    Inbound,
    Outbound,
    Pseudonym,
    RequestHandoff,
    SubmitReport,
)
from backend.core.errors import HotlineError
from backend.core.live_chat import EventKind
from backend.core.pseudonyms import Pseudonymizer, Purpose
from backend.core.settings import TELEGRAM_DOWNLOAD_LIMIT_BYTES, Settings
from backend.flows.channels import BUTTON_LABEL_LIMITS
from bot.channel import Capabilities, fit
from bot.inbound_limits import Sender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import ExitedError, ExitMark, Once, OnceRefusedError, Replies
from bot.telegram import evidence
from bot.telegram.chats import TelegramChatStore
from bot.telegram.dedupe import Claim, UpdateDedupe
from bot.telegram.outbox import (
    MAX_MESSAGE_CHARS,
    RECHECK_AFTER_S,
    ChatExitedError,
    DeliveryFailedError,
    OutboxLimits,
    RecipientBlockedError,
    TelegramOutbox,
)
from bot.telegram.outgoing import OutgoingStore, Pending
from bot.telegram.poller_lease import PollerLease
from bot.telegram.polling import ConfirmingPoller, Outcome
from bot.telegram.shared_limits import SharedRateLimits
from bot.telegram.updates import (
    ChatOrderProcessor,
    ReplyOrder,
    SanitizingRequest,
    chat_of,
    is_quick_exit,
    parses_as_update,
    release_chat,
)

# Logs under the package name, "bot.telegram", the name operators filter the door's records on.
log = logging.getLogger(__package__)

# python-telegram-bot 22 warns on every RetryAfter unless the process opts in to the coming
# `timedelta` type (it reads the variable when the error is made); the outbox reads either.
os.environ.setdefault("PTB_TIMEDELTA", "1")

CHANNEL = "telegram"
PRIVATE_ONLY = "1:1 대화에서만 이용할 수 있어요. / This service works in private chats only."
INLINE_REFUSAL = "1:1 대화 열기 / Open a private chat"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
QUICK_EXIT_BUTTON = "quick_exit"
# How long a quick exit waits for replies already on the wire to the chat, to delete them too.
SETTLE_S = 2.0
_GROUPS = frozenset({ChatType.GROUP, ChatType.SUPERGROUP})

CAPABILITIES = Capabilities(
    name=CHANNEL,
    can_delete_messages=True,  # both sides of a private chat, which /exit erases
    pushes=True,  # a counselor's reply reaches the victim at once
    max_text_chars=MAX_MESSAGE_CHARS,
    # One button a row: Telegram sets no count, a phone screen does. Flows stay far below.
    max_buttons=20,
    # Telegram documents no label limit; a phone shows about this much on one row.
    max_button_label_chars=BUTTON_LABEL_LIMITS[CHANNEL],
    max_button_id_bytes=64,  # callback_data is 1-64 bytes
    delete_window_s=48 * 3600,  # bots delete messages in private chats within 48 hours
    verbatim_split=True,  # no parse mode: the parts of a long text join back to exactly it
)


@dataclass(frozen=True)
class TelegramConfig:
    token: str = field(repr=False)
    base_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    max_file_bytes: int = TELEGRAM_DOWNLOAD_LIMIT_BYTES
    limits: OutboxLimits = field(default_factory=OutboxLimits)
    # How long a worker holds an update before another may take it over (it died mid-turn).
    update_lease_s: int = redis_keys.TELEGRAM_UPDATE_LEASE_S
    # Polling: how often to ask again while updates are in flight or held by another worker.
    # Short, so a quick exit fetched behind slow updates waits at most this long (issue 12).
    poll_recheck_s: float = 0.25
    # Polling: how long this worker's claim on the bot's one poller lasts unrenewed.
    poll_lease_s: int = redis_keys.TELEGRAM_POLLER_LEASE_S
    # Webhook: how many connections Telegram opens at once to deliver updates (1-100).
    webhook_max_connections: int = 100
    # How long the neutral "conversation ended" notice stays before it is deleted too.
    exit_notice_s: float = 5.0
    # Below the Redis client's connection pool (100 by default, shared with the rest of the
    # node): each turn in flight holds a connection, and an exhausted pool fails turns.
    max_concurrent_updates: int = 64
    # How long a stepped turn's pending replies stay this worker's unrenewed, before another
    # worker sends them (`bot.telegram.outgoing`: this one died).
    outgoing_lease_s: float = redis_keys.TELEGRAM_OUTGOING_LEASE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramConfig:
        if settings.telegram_token is None:
            raise ValueError("no Telegram token")
        return cls(
            token=settings.telegram_token,
            base_url=settings.telegram_base_url,
            webhook_url=settings.telegram_webhook_url,
            webhook_secret=settings.telegram_webhook_secret,
            max_file_bytes=settings.telegram_max_file_bytes,
            poll_lease_s=settings.telegram_poll_lease_s,
            outgoing_lease_s=settings.telegram_outgoing_lease_s,
            webhook_max_connections=settings.telegram_webhook_max_connections,
            limits=OutboxLimits(
                per_chat_per_s=settings.telegram_chat_messages_per_s,
                per_bot_per_s=settings.telegram_bot_messages_per_s,
            ),
        )

    @property
    def webhook_path(self) -> str | None:
        if self.webhook_url is None:
            return None
        return urlsplit(self.webhook_url).path or "/"


class TelegramDoor:
    def __init__(
        self,
        config: TelegramConfig,
        *,
        runtime: ConversationRuntime,
        pseudonymizer: Pseudonymizer,
        redis: Redis,
        root_secret: bytes,
        session_ttl_s: int,
        request: BaseRequest | None = None,
    ) -> None:
        """`request` replaces PTB's HTTP client for Bot API methods (the benchmark answers
        in-process, to measure the pipeline rather than the network)."""
        if config.webhook_url is not None and not config.webhook_secret:
            raise ValueError("a webhook needs a secret token")
        self._config = config
        builder = (
            ApplicationBuilder()
            .token(config.token)
            .concurrent_updates(ChatOrderProcessor(config.max_concurrent_updates))
        )
        if config.base_url is not None:
            # A Bot API server serves files beside the methods: <server>/bot<token>/<method> and
            # <server>/file/bot<token>/<path>, as Telegram's own defaults are laid out.
            file_url = config.base_url.removesuffix("bot") + "file/bot"
            builder = builder.base_url(config.base_url).base_file_url(file_url)
        if request is not None:
            builder = builder.request(request)
        # No PTB `Updater`: it confirms updates once fetched; `ConfirmingPoller` once handled.
        builder = builder.updater(None)
        if config.webhook_url is None:
            builder = builder.get_updates_request(SanitizingRequest(connection_pool_size=1))
        self.application: Application = builder.build()  # type: ignore[type-arg]  # PTB's six type parameters say nothing here
        bot_id = int(config.token.split(":", 1)[0])
        shared = SharedRateLimits(
            redis,
            bot_id,
            config.limits,
            lambda chat_id: pseudonymizer.pseudonym(Purpose.RATE_LIMIT, CHANNEL, str(chat_id)),
        )
        self.outbox = TelegramOutbox(
            self.application.bot, config.limits, runtime.metrics, gate=shared
        )
        self._runtime = runtime
        self._pseudonymizer = pseudonymizer
        self._chats = TelegramChatStore(redis, root_secret, session_ttl_s)
        self._outgoing = OutgoingStore(
            redis, root_secret, session_ttl_s, lease_s=config.outgoing_lease_s
        )
        self._recovery: asyncio.Task[None] | None = None
        self._resending: set[asyncio.Task[None]] = set()
        self._dedupe = UpdateDedupe(
            redis, int(config.token.split(":", 1)[0]), lease_s=config.update_lease_s
        )
        self._poller: ConfirmingPoller | None = None
        self._lease: PollerLease | None = None
        if config.webhook_url is None:
            self._lease = PollerLease(
                redis, int(config.token.split(":", 1)[0]), config.poll_lease_s
            )
            self._poller = ConfirmingPoller(
                self.application.bot,
                self.admit,
                allowed_updates=list(Update.ALL_TYPES),
                recheck_s=config.poll_recheck_s,
            )
        self._stopping = asyncio.Event()
        self._later: set[asyncio.Task[None]] = set()
        # Webhook updates answered once stepped, whose replies are still going out.
        self._answered: set[asyncio.Task[Outcome]] = set()
        self._reply_order = ReplyOrder()
        self.application.add_handler(TypeHandler(Update, self._dispatch))
        self.application.add_error_handler(self._on_error)

    @property
    def webhook_path(self) -> str | None:
        return self._config.webhook_path

    # Admission.

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """Telegram's POST to the webhook: the secret is checked before anything is read.

        Missing secret: 401; wrong secret: 403; nothing of such a request is processed. An
        update that cannot be parsed is acknowledged (200) and dropped, so Telegram does not
        redeliver it forever.
        """
        given = request.headers.get(SECRET_HEADER)
        expected = self._config.webhook_secret
        if given is None or expected is None:
            return web.Response(status=401)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("telegram webhook called with a wrong secret token")
            return web.Response(status=403)
        try:
            data = await request.json()
        except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] (found by fuzzing)
            return web.Response(status=400, text="not JSON")
        if not parses_as_update(data):
            log.warning("telegram sent an update that cannot be parsed; its content is dropped")
            return web.Response(status=200)
        update = Update.de_json(data, self.application.bot)
        # Acknowledged only once handled: a crash before the 200 makes Telegram deliver the
        # update again (see `bot.telegram.dedupe`). Handled means stepped: Telegram sends one
        # chat's updates one after another, so a 200 held back until the turn's replies went
        # out at one a second would hold her /exit back as long (issue 12). The step's write
        # marks the update done, so a redelivery after it, here or at another worker, is
        # dropped as done and answered 200 even while the replies still go out.
        try:
            held = await self._admit_until_stepped(update) is Outcome.HELD
        except TelegramError as exc:
            # Telegram refused a call this update made (a callback query id it does not know,
            # say): delivering the update again would meet the same refusal, so it is
            # acknowledged and dropped, like one that cannot be parsed. Found by fuzzing.
            log.warning("telegram update dropped: the Bot API refused it (%s)", type(exc).__name__)
            held = False
        if held:
            return web.Response(status=503, headers={"Retry-After": "5"})
        return web.Response(status=200)

    async def _admit_until_stepped(self, update: Update) -> Outcome:
        """`admit`, until the update was handled or its turn has stepped; the rest of its work
        (the replies) goes on in the background."""
        admission = _Admission(update.update_id)
        handling = asyncio.create_task(self.admit(update, admission))
        stepped = asyncio.create_task(admission.stepped.wait())
        await asyncio.wait({handling, stepped}, return_when=asyncio.FIRST_COMPLETED)
        stepped.cancel()
        if handling.done():
            return handling.result()
        self._answered.add(handling)
        handling.add_done_callback(self._answered.discard)
        return Outcome.HANDLED

    async def admit(self, update: Update, admission: _Admission | None = None) -> Outcome:
        """Claim the update and handle it in the door's per-chat order; HELD when another
        worker holds it. Its chat's place in line is taken before the claim's round trip, so
        updates handed over in Telegram's order are handled in that order.

        A private text or button press is claimed by its turn, in the same round trip as the
        conversation lock (`_turn_only`); anything else here, before it is handled.
        """
        self._runtime.metrics.update(CHANNEL)
        admission = admission or _Admission(update.update_id)
        message = update.message
        if message is not None and message.chat.type == ChatType.PRIVATE:
            self.outbox.note_incoming(message.chat.id, message.message_id)
        exit_chat = chat_of(update) if is_quick_exit(update) else None
        if exit_chat is not None:
            # Before anything else: the chat's waiting replies are dropped now, not after the
            # exit's turn (issue 12), and nothing else goes to it until the exit is done. The
            # turn itself jumps the chat's queue.
            self.outbox.abandon(exit_chat)

        async def claimed() -> None:
            # PTB runs the handler in this task, so `_dispatch` finds the admission.
            _admission.set(admission)
            if not _turn_only(update):
                claim = await self._dedupe.claim(update.update_id)
                if claim is not Claim.MINE:
                    admission.held = claim is Claim.BUSY
                    return
                admission.claimed = True
            await self.application.process_update(update)

        try:
            await self.application.update_processor.process_update(update, claimed())
        finally:
            if exit_chat is not None:
                self.outbox.reopen(exit_chat)
        return Outcome.HELD if admission.held else Outcome.HANDLED

    async def _dispatch(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Every update, once: a copy redelivered to this or another worker is dropped."""
        admission = _admission.get(None)
        if admission is None or admission.update_id != update.update_id:
            admission = _Admission(update.update_id)  # not through `admit`: PTB's own queue
        handling = _Handling(self._dedupe.done_key(update.update_id), update.update_id)
        if not admission.claimed:
            if _turn_only(update):
                handling.once = self._dedupe.once(update.update_id)
            elif await self._dedupe.claim(update.update_id) is not Claim.MINE:
                log.info("telegram update delivered twice; processed once")
                return
        context = _handling.set(handling)
        try:
            await self._route(update)
        finally:
            _handling.reset(context)
            if handling.refused is not None:
                # A copy: handled before, or being handled by another worker right now.
                log.info("telegram update delivered twice; processed once")
                admission.held = handling.refused is Claim.BUSY
            elif not handling.marked:
                # Also after an error: the victim was told to try again; a redelivery would
                # only repeat the failure. Usually marked by the turn's last write (`_send`).
                await self._dedupe.done(update.update_id)

    async def _route(self, update: Update) -> None:
        if update.callback_query is not None:
            await self._on_button(update.callback_query)
        elif update.inline_query is not None:
            await self._refuse_inline(update.inline_query)
        elif update.my_chat_member is not None:
            await self._on_membership(update.my_chat_member)
        elif update.channel_post is not None:
            await self._leave(update.channel_post.chat.id)
        elif update.message is not None:
            await self._on_message(update.message, update)
        else:
            # Edits, polls, reactions and kinds Telegram adds later: not new input.
            log.debug("telegram update of a kind the door does not act on; ignored")

    # Victims.

    async def _on_message(self, message: Message, update: Update) -> None:
        chat = message.chat
        if chat.type in _GROUPS:
            await self._refuse_group(chat.id)
            return
        user = message.from_user
        if chat.type != ChatType.PRIVATE or user is None:
            return
        if filters.StatusUpdate.ALL.check_update(update):
            return  # a pinned message, shared access: not the victim speaking
        if message.text is not None:
            inbound = self._inbound(user.id, user.language_code, text=message.text)
            await self._turn(inbound, chat.id, message.message_id, self._sender(user.id))
            return
        await self._on_file(message, user.id, user.language_code)

    async def _on_button(self, query: CallbackQuery) -> None:
        # Every press is answered, or the victim's button spins. A press older than Telegram's
        # callback window cannot be answered any more; the turn still goes on.
        try:
            await query.answer()
        except TelegramError as exc:
            log.info("telegram callback not answered (%s); the turn goes on", type(exc).__name__)
        message = query.message
        if message is None or message.chat.type != ChatType.PRIVATE or not query.data:
            return
        user = query.from_user
        inbound = self._inbound(user.id, user.language_code, button=query.data)
        await self._turn(inbound, message.chat.id, None, self._sender(user.id))

    async def _on_file(self, message: Message, user_id: int, language: str | None) -> None:
        """A photo, document, sticker, voice message or anything else that is not text.

        Only when the conversation waits on a files step (never for a minor) is a photo or
        document fetched, hashed in memory and dropped (`evidence`): with a PDQ only when
        the step is the victim's choice of takedown matching, sealed to the centre key only
        when it is the screenshots step they consented to. Its facts go to the flow like any
        answer. Otherwise nothing is fetched (no getFile) or passed on and the
        conversation stays where it was; the victim is told so, or, for a file over the size
        limit, that it is too large. The message is remembered, so /exit erases it with the rest.
        """
        pseudonym = self._pseudonym(user_id)
        # Counted before anything is fetched: a flood of files must not become downloads.
        refused = await self._runtime.over_limit(
            self._inbound(user_id, language), self._sender(user_id)
        )
        if refused is not None:
            exit_label = self._text("common.quick_exit", language)
            await self._send_guarded(
                pseudonym, message.chat.id, refused.messages, exit_label, [message.message_id]
            )
            return
        declared = _declared_bytes(message)
        too_large = declared is not None and declared > self._config.max_file_bytes
        wanted = _evidence_file(message)
        keep = None
        if not too_large and wanted is not None:
            keep = await self._runtime.files_keep(pseudonym)
        if wanted is not None and keep is not None:
            file_id, kind, mime_type = wanted
            sealed = keep == "sealed"
            try:
                attachment = await evidence.collect(
                    self.application.bot,
                    file_id,
                    kind,
                    declared_bytes=declared,
                    mime_type=mime_type,
                    max_bytes=min(self._config.max_file_bytes, evidence.MAX_SEALED_FILE_BYTES)
                    if sealed
                    else self._config.max_file_bytes,
                    # PDQ is what takedown hash lists match on: only when the victim asked.
                    want_pdq=keep == "match",
                    seal=self._runtime.seal_file if sealed else None,
                )
            except evidence.FileTooLargeError:
                too_large = True
            else:
                inbound = self._inbound(user_id, language, attachments=(attachment,))
                await self._turn(inbound, message.chat.id, message.message_id)
                return
        key = "common.file_too_large" if too_large else "common.no_files"
        answer = (Outbound(self._text(key, language)),)
        exit_label = self._text("common.quick_exit", language)
        async with self._reply_order.place(message.chat.id):  # after earlier turns' replies
            await self._send_guarded(
                pseudonym, message.chat.id, answer, exit_label, [message.message_id]
            )

    async def _turn(
        self,
        inbound: Inbound,
        chat_id: int,
        incoming_id: int | None,
        sender: Sender | None = None,
    ) -> None:
        """`sender`: whom the inbound limits count; None when already counted (a file)."""
        incoming = [] if incoming_id is None else [incoming_id]
        # The chat's epoch as the turn begins: a quick exit meanwhile drops its replies.
        epoch = self.outbox.epoch(chat_id)
        handling = _handling.get(None)
        once = None if handling is None else handling.once
        # Update ids rise with every update: one from before the chat's last quick exit, handed
        # over again after it (its worker died), starts nothing in the chat she erased.
        exit_mark = None if handling is None else self._exit_mark(inbound, handling.update_id)
        kept: list[tuple[Turn, Pending]] = []
        exit_label = self._text("common.quick_exit", inbound.language)

        def replies(turn: Turn) -> Replies | None:
            # Written with the step: the replies outlive this worker (`bot.telegram.outgoing`),
            # and a quick exit drops every pending one of the chat in the same write, leaving
            # its own update id as the chat's exit mark.
            if turn.quick_exit:
                return self._outgoing.clearing(inbound.pseudonym, exit_mark)
            if not turn.messages:
                return None
            opened = tuple(
                e.case_id for e in turn.effects if isinstance(e, SubmitReport | RequestHandoff)
            )
            pending, write = self._outgoing.new(
                inbound.pseudonym,
                chat_id,
                _prepared(turn.messages, exit_label),
                turn.priority,
                case_ids=opened,
            )
            kept.append((turn, pending))
            return write

        try:
            turn = await self._runtime.handle(
                inbound, once=once, sender=sender, replies=replies, exit_mark=exit_mark
            )
        except OnceRefusedError as refused:
            if handling is not None:
                handling.refused = self._dedupe.refused(refused.holder)
            return
        except ExitedError:
            log.info("telegram update from before a quick exit; dropped")
            return
        if handling is not None:
            handling.once = None
        if turn.quick_exit:
            # Ahead of every reply still queued for the chat: those are dropped anyway.
            self._stepped()
            await self._erase(inbound.pseudonym, chat_id, turn.messages, incoming)
            return
        # Only a turn whose write was made: a failed write answers with another `Turn`.
        pending = next((p for t, p in kept if t is turn), None)
        if pending is not None:
            self._outgoing.sending.add(self._outgoing_member(pending))
        place = self._reply_order.place(chat_id)
        self._stepped()
        async with place:
            await self._answer(
                inbound, chat_id, turn, incoming_id=incoming_id, epoch=epoch, pending=pending
            )

    @staticmethod
    def _exit_mark(inbound: Inbound, update_id: int) -> ExitMark:
        return ExitMark(
            redis_keys.telegram_exit_key(inbound.pseudonym),
            update_id,
            redis_keys.TELEGRAM_UPDATE_TTL_S,
            ends=(redis_keys.telegram_chat_key(inbound.pseudonym),),
        )

    def _stepped(self) -> None:
        """The turn has stepped: the chat's next update may begin, and a webhook update is
        answered."""
        release_chat()
        admission = _admission.get(None)
        if admission is not None:
            admission.stepped.set()

    async def _answer(
        self,
        inbound: Inbound,
        chat_id: int,
        turn: Turn,
        *,
        incoming_id: int | None,
        epoch: int,
        pending: Pending | None = None,
    ) -> None:
        incoming = [] if incoming_id is None else [incoming_id]
        # Offered after a finished report too: the chat is still on the phone, and someone may
        # be looking at it.
        exit_label = self._text("common.quick_exit", inbound.language)
        # The victim's upload goes before the answer, so the answer is the turn's last act.
        delete_incoming = incoming_id is not None and turn.delete_inbound
        opened = tuple(
            e.case_id for e in turn.effects if isinstance(e, SubmitReport | RequestHandoff)
        )
        await self._send_guarded(
            inbound.pseudonym,
            chat_id,
            turn.messages,
            exit_label,
            incoming,
            delete_incoming=delete_incoming,
            case_ids=opened,
            epoch=epoch,
            priority=turn.priority,
            pending=pending,
        )

    async def _send_guarded(
        self,
        pseudonym: Pseudonym,
        chat_id: int,
        messages: tuple[Outbound, ...],
        exit_label: str | None = None,
        incoming: list[int] | None = None,
        *,
        delete_incoming: bool = False,
        case_ids: tuple[str, ...] = (),
        epoch: int | None = None,
        priority: int = 0,
        pending: Pending | None = None,
    ) -> None:
        try:
            if delete_incoming and incoming:
                try:
                    await self.outbox.delete(chat_id, incoming)
                except BaseException:
                    if pending is not None:  # not sent: left for the next look to take
                        self._outgoing.sending.discard(self._outgoing_member(pending))
                    raise
            await self._send(
                pseudonym,
                chat_id,
                messages,
                exit_label,
                incoming or [],
                case_ids=case_ids,
                epoch=epoch,
                priority=priority,
                pending=pending,
            )
        except RecipientBlockedError:
            if pending is not None:
                await self._outgoing.finish(pending)
            await self._blocked(pseudonym)
        except ChatExitedError:
            log.info("telegram replies of a turn dropped: the victim left the chat")

    async def _send(
        self,
        pseudonym: Pseudonym,
        chat_id: int,
        messages: tuple[Outbound, ...],
        exit_label: str | None,
        incoming: list[int],
        *,
        case_ids: tuple[str, ...] = (),
        epoch: int | None = None,
        priority: int = 0,
        pending: Pending | None = None,
        still: _Still | None = None,
    ) -> None:
        """Send in order, fitted to Telegram's limits (long texts split, a message's buttons under
        its last part, the exit button under the last message); remember the victim's message
        and every reply for /exit, in one write, also when a send fails half-way.

        When every message went out, that write also marks the update being handled done: it is
        the turn's last act, and one round trip fewer per update.

        `pending`: the same replies as kept with the step (`bot.telegram.outgoing`), sent as
        kept; before each message after the first, how far they went is written, and once
        they went out (or were dropped) they are deleted. Left for another try (this worker's
        or another's, once the lease runs out) when a send failed for good.

        A message that waited (`RECHECK_AFTER_S`) looks whether it is still wanted (`_Still`:
        the kept replies, or `still` for others) before it goes: a quick exit through another
        worker drops it, and deletes what went out of these messages and the victim's own.
        """
        sent: list[int] = []
        prepared = _prepared(messages, exit_label) if pending is None else pending.messages
        handling = _handling.get(None)
        finished = False
        # Sent, or dropped for good: the kept replies go; otherwise (a send failed for good, or
        # the task was cancelled) they stay, with how far they went, for the next look.
        settled = False
        kept = still if pending is None else self._still_kept(pending)
        try:
            for index, (text, markup) in enumerate(prepared):
                # Before every message after the first, and before the first too when it
                # waited behind earlier turns' replies: she may have left through another worker.
                if (
                    kept is not None
                    and (index or time.monotonic() - kept.made_at >= RECHECK_AFTER_S)
                    and not await kept.at(index, sent)()
                ):
                    raise ChatExitedError("the victim left this chat")
                sent.append(
                    await self.outbox.send(
                        chat_id,
                        text,
                        markup,
                        epoch=epoch,
                        priority=priority,
                        still=None if kept is None else kept.at(index, sent),
                    )
                )
            finished = settled = True
        except (ChatExitedError, RecipientBlockedError, BadRequest):
            settled = True  # dropped, blocked, or refused as it is: another try cannot help
            raise
        finally:
            # The victim left meanwhile: the exit erases what went out (the outbox tells it the
            # ids), and a record written now would outlive the erased chat.
            exited = epoch is not None and epoch != self.outbox.epoch(chat_id)
            done = handling.key if finished and handling is not None else None
            if kept is not None and kept.cleared:
                # She left through another worker, whose erase could not know this turn's
                # messages (not in the chat record yet): they are deleted here.
                await self._delete_left(chat_id, incoming + sent)
            elif not exited:
                await self._chats.remember(
                    pseudonym, chat_id, incoming + sent, case_ids=case_ids, done_update=done
                )
            if done is not None and handling is not None and not exited:
                handling.marked = True
            if pending is not None:
                if settled:
                    await self._outgoing.finish(pending)
                else:
                    self._outgoing.sending.discard(self._outgoing_member(pending))
                    with contextlib.suppress(Exception):
                        await self._outgoing.advance(pending, len(sent), sent)

    def _still_kept(self, pending: Pending) -> _Still:
        """A turn's kept replies are still there (`OutgoingStore.advance`, which also writes
        how far they went and renews the lease); a quick exit's write clears them."""

        async def kept(index: int, sent: list[int]) -> bool:
            return await self._outgoing.advance(pending, index, sent)

        return _Still(kept, pending.made_at)

    async def _delete_left(self, chat_id: int, message_ids: list[int]) -> None:
        """Best effort, at once: messages of a chat the victim has left."""
        if not message_ids:
            return
        try:
            await self.outbox.delete(chat_id, message_ids, urgent=True)
        except (HotlineError, TelegramError) as exc:
            log.warning("telegram messages of a left chat not deleted: %s", type(exc).__name__)

    @staticmethod
    def _outgoing_member(pending: Pending) -> str:
        return f"{pending.pseudonym}:{pending.turn}"

    async def _resend(self, pending: Pending) -> None:
        """A dead worker's stepped turn: what it did not send goes out now, in its chat's
        order, and the ids it sent join the chat record for /exit."""
        chat_id = pending.chat_id
        epoch = self.outbox.epoch(chat_id)
        sent = list(pending.sent)
        kept = self._still_kept(pending)
        try:
            async with self._reply_order.place(chat_id):
                for index in range(pending.done, len(pending.messages)):
                    if not await kept.at(index, sent)():
                        raise ChatExitedError("the victim left this chat")
                    text, markup = pending.messages[index]
                    sent.append(
                        await self.outbox.send(
                            chat_id,
                            text,
                            markup,
                            epoch=epoch,
                            priority=pending.priority,
                            still=kept.at(index, sent),
                        )
                    )
        except RecipientBlockedError:
            await self._outgoing.finish(pending)
            await self._blocked(pending.pseudonym)
            return
        except (ChatExitedError, BadRequest):
            if kept.cleared:  # she left: what the dead worker and this one sent goes too
                await self._delete_left(chat_id, sent)
            await self._outgoing.finish(pending)
            return
        except (HotlineError, TelegramError) as exc:
            # Left for a later try: its lease runs out, and the next look takes it again.
            self._outgoing.sending.discard(self._outgoing_member(pending))
            log.warning("telegram: a dead worker's replies not sent yet: %s", type(exc).__name__)
            return
        if epoch == self.outbox.epoch(chat_id):
            await self._chats.remember(pending.pseudonym, chat_id, sent, case_ids=pending.case_ids)
        await self._outgoing.finish(pending)
        log.info("telegram: a dead worker's replies sent (%d)", len(sent))

    async def _recover(self) -> None:
        """At start and every third of the outgoing lease: renew the leases of the turns this
        worker is sending, and take over those of dead workers."""
        while not self._stopping.is_set():
            try:
                await self._outgoing.renew()
                for pending in await self._outgoing.take_due():
                    task = asyncio.create_task(self._resend(pending))
                    self._resending.add(task)
                    task.add_done_callback(self._resending.discard)
            except Exception as exc:  # Redis away a moment: the next look tries again
                log.warning("telegram pending replies not looked at: %s", type(exc).__name__)
            try:
                async with asyncio.timeout(self._outgoing.lease_s / 3):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def _erase(
        self,
        pseudonym: Pseudonym,
        chat_id: int,
        notice: tuple[Outbound, ...],
        incoming: list[int],
    ) -> None:
        """/exit: delete both sides of the chat, say a neutral word, and delete that too.

        The deletes jump every queue (`urgent`); then the replies a turn had on the wire when
        the exit came are awaited and deleted too."""
        # Every reply still pending for the chat is dropped (its step's write did so already,
        # unless the exit came another way): nothing of it is sent after the exit.
        await self._outgoing.clear(pseudonym)
        known = {*await self._chats.deletable(pseudonym), *incoming}
        known |= set(self.outbox.sent_recently(chat_id))
        deletable = sorted(known)
        try:
            await self.outbox.delete(chat_id, deletable, urgent=True)
            late = sorted(set(await self.outbox.settle(chat_id, SETTLE_S)) - known)
            if late:
                await self.outbox.delete(chat_id, late, urgent=True)
                deletable += late
            sent = []
            for message in fit(notice, CAPABILITIES):
                sent.append(await self.outbox.send(chat_id, message.text, exiting=True))
        except RecipientBlockedError:
            await self._blocked(pseudonym)
            return
        finally:
            await self._chats.forget(pseudonym)
        log.info("telegram conversation erased on quick exit (%d messages)", len(deletable))
        task = asyncio.create_task(self._delete_later(chat_id, sent))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _delete_later(self, chat_id: int, message_ids: list[int]) -> None:
        # On shutdown the notice goes at once rather than stay in the chat.
        try:
            async with asyncio.timeout(self._config.exit_notice_s):
                await self._stopping.wait()
        except TimeoutError:
            pass
        try:
            await self.outbox.delete(chat_id, message_ids)
        except (HotlineError, TelegramError) as exc:
            log.warning("telegram exit notice not deleted: %s", type(exc).__name__)

    async def _blocked(self, pseudonym: Pseudonym) -> None:
        """The victim blocked the bot: end the conversation, keep nothing, and flag the cases
        it opened for their counselors (replies will not reach the victim)."""
        was_active = await self._runtime.end(pseudonym)
        case_ids = await self._chats.cases(pseudonym)
        # Flagged before the record goes: a failure here leaves the cases to flag next time.
        await self._runtime.flag_unreachable(case_ids)
        await self._outgoing.clear(pseudonym)  # nothing kept can reach her any more
        await self._chats.forget(pseudonym)
        log.warning(
            "telegram: a victim blocked the bot; conversation ended "
            "(flag: blocked, active: %s, cases flagged: %d)",
            was_active,
            len(case_ids),
        )

    # Everyone else.

    async def _on_membership(self, change: ChatMemberUpdated) -> None:
        chat = change.chat
        status = change.new_chat_member.status
        if chat.type == ChatType.PRIVATE and status == ChatMember.BANNED:
            # After the replies of earlier turns (their record write would bring the erased
            # chat record back): turns release the chat's order once stepped.
            async with self._reply_order.place(chat.id):
                await self._blocked(self._pseudonym(change.from_user.id))
        elif chat.type in _GROUPS and status in {ChatMember.MEMBER, ChatMember.ADMINISTRATOR}:
            await self._refuse_group(chat.id)
        elif chat.type == ChatType.CHANNEL and status == ChatMember.ADMINISTRATOR:
            await self._leave(chat.id)

    async def _refuse_group(self, chat_id: int) -> None:
        try:
            await self.outbox.send(chat_id, PRIVATE_ONLY)
        except (HotlineError, TelegramError) as exc:
            log.info("telegram group refusal not sent: %s", type(exc).__name__)
        # Leave even when the refusal could not be sent: nobody should report in front of a
        # group, and the bot must not be spoken to there again.
        await self._leave(chat_id)

    async def _leave(self, chat_id: int) -> None:
        try:
            await self.application.bot.leave_chat(chat_id)
        except TelegramError as exc:
            log.info("telegram could not leave a chat: %s", type(exc).__name__)

    async def _refuse_inline(self, query: InlineQuery) -> None:
        # No results, and a button that opens the private chat instead.
        button = InlineQueryResultsButton(text=INLINE_REFUSAL, start_parameter="start")
        try:
            await query.answer([], cache_time=0, is_personal=True, button=button)
        except TelegramError as exc:
            log.info("telegram inline query not answered: %s", type(exc).__name__)

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
        user = update.effective_user
        if chat is None or chat.type != ChatType.PRIVATE or user is None:
            return
        text = self._text("common.unavailable", user.language_code)
        try:
            await self._send_guarded(self._pseudonym(user.id), chat.id, (Outbound(text),))
        except Exception as exc:  # the last boundary: nothing may escape it
            # Raising here would make PTB log this error with its traceback.
            log.error("telegram could not send the unavailable notice: %s", type(exc).__name__)

    # Helpers.

    def _pseudonym(self, user_id: int) -> Pseudonym:
        return self._pseudonymizer.pseudonym(Purpose.SESSION, CHANNEL, str(user_id))

    def _sender(self, user_id: int) -> Sender | None:
        rate_pseudonym = self._pseudonymizer.pseudonym(Purpose.RATE_LIMIT, CHANNEL, str(user_id))
        return self._runtime.sender(CHANNEL, rate_pseudonym)  # no client address: Telegram's

    def _inbound(
        self,
        user_id: int,
        language: str | None,
        *,
        text: str | None = None,
        button: str | None = None,
        attachments: tuple[Attachment, ...] = (),
    ) -> Inbound:
        return Inbound(
            pseudonym=self._pseudonym(user_id),
            channel=CHANNEL,
            text=text,
            button=button,
            language=language,
            attachments=attachments,
            blocking=self._pseudonymizer.pseudonym(Purpose.BLOCKING, CHANNEL, str(user_id)),
        )

    def _text(self, key: str, language: str | None) -> str:
        return self._runtime.text(key, language)

    # Live chat.

    async def deliver(
        self,
        pseudonym: Pseudonym,
        case_id: str,
        messages: Sequence[Outbound],
        *,
        language: str,
        ref: str = "",
    ) -> EventKind:
        """The relay's `Delivery`: push to the victim's chat at once, protected, with the exit
        button, every message id remembered so /exit erases the chat with them."""
        del case_id, ref  # the relay records the outcome on the transcript
        chat_id = await self._chats.chat_id(pseudonym)
        if chat_id is None:
            return EventKind.FAILED  # the chat record expired or was erased
        exit_label = self._text("common.quick_exit", language)
        epoch = self.outbox.epoch(chat_id)

        async def still_open(_index: int, _sent: list[int]) -> bool:
            # A counselor's line: the chat's reply address is still there (an exit deletes it).
            return await self._chats.chat_id(pseudonym) == chat_id

        still = _Still(still_open, time.monotonic())
        try:
            await self._send(
                pseudonym, chat_id, tuple(messages), exit_label, [], epoch=epoch, still=still
            )
        except RecipientBlockedError:
            await self._blocked(pseudonym)
            return EventKind.FAILED
        except ChatExitedError:
            return EventKind.FAILED  # she left (quick exit) while it waited for its slot
        except (DeliveryFailedError, TelegramError) as exc:
            log.warning("telegram: a live chat message was not delivered: %s", type(exc).__name__)
            return EventKind.FAILED
        return EventKind.DELIVERED

    # Lifecycle.

    async def start(self) -> None:
        if self._lease is not None:
            # Before anything is asked of Telegram: a second poller would take the first's
            # updates. PollerTakenError (a settings problem: one line, exit 2) if one runs.
            await self._lease.acquire(on_lost=self._stop_polling)
        try:
            await self._start()
            self._recovery = asyncio.create_task(self._recover())
        except BaseException:
            if self._lease is not None:
                await self._lease.release()
            raise

    async def _start(self) -> None:
        await self.application.initialize()
        if self._config.webhook_url is not None:
            await self.application.bot.set_webhook(
                self._config.webhook_url,
                secret_token=self._config.webhook_secret,
                allowed_updates=Update.ALL_TYPES,
                max_connections=self._config.webhook_max_connections,
            )
            await self.application.start()
            log.info("telegram door started (webhook)")
            return
        if self._poller is None:  # pragma: no cover - made whenever there is no webhook
            raise RuntimeError("no poller")
        await self.application.start()
        await self._poller.start()
        log.info("telegram door started (long polling)")

    async def _stop_polling(self) -> None:
        if self._poller is not None and self._poller.running:
            await self._poller.stop()

    async def stop(self) -> None:
        await self._stop_polling()
        if self._lease is not None:
            await self._lease.release()
        if self._answered:
            await asyncio.gather(*self._answered, return_exceptions=True)
        if self.application.running:
            await self.application.stop()
        # Exit notices still showing are deleted now, while the bot can still call Telegram.
        self._stopping.set()
        if self._recovery is not None:
            await asyncio.gather(self._recovery, return_exceptions=True)
        waiting = [*self._later, *self._resending]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        await self.application.shutdown()


@dataclass
class _Admission:
    """An update `admit` handed to PTB: whether it claimed it already, and whether it turned
    out to be held by another worker (the webhook answers 503, the poller asks again)."""

    update_id: int
    claimed: bool = False
    held: bool = False
    # Set once the update's turn has stepped (its replies may still wait for their slots).
    stepped: asyncio.Event = field(default_factory=asyncio.Event)


class _Still:
    """Whether a turn's or a line's messages are still wanted, looked up in Redis by `look`
    (message index, ids sent before it): a quick exit through any worker says no (this
    process's outbox epoch knows only its own exits). `cleared` once a look said no;
    `made_at` (monotonic) when the messages were made."""

    __slots__ = ("_look", "cleared", "made_at")

    def __init__(self, look: Callable[[int, list[int]], Awaitable[bool]], made_at: float) -> None:
        self._look = look
        self.cleared = False
        self.made_at = made_at

    def at(self, index: int, sent: list[int]) -> Callable[[], Awaitable[bool]]:
        """The look before message `index`, `sent` the ids of the ones before it."""

        async def still() -> bool:
            wanted = await self._look(index, sent)
            self.cleared = self.cleared or not wanted
            return wanted

        return still


@dataclass
class _Handling:
    """The update a task is handling: its dedupe key, whether a write marked it done, the
    claim its turn is still to take (`once`), and what that claim found if it was refused."""

    key: str
    update_id: int
    marked: bool = False
    once: Once | None = None
    refused: Claim | None = None


# Set by `admit` and `_dispatch` for the task PTB runs an update in; read down the call.
_admission: contextvars.ContextVar[_Admission] = contextvars.ContextVar("telegram_admission")
_handling: contextvars.ContextVar[_Handling] = contextvars.ContextVar("telegram_update")


def _turn_only(update: Update) -> bool:
    """A private text or button press with data: nothing lasting happens before its turn (a
    button's answerCallbackQuery aside, harmless twice), so its claim can be taken with the
    conversation lock, one round trip fewer."""
    message = update.message
    if message is not None:
        return (
            message.chat.type == ChatType.PRIVATE
            and message.text is not None
            and message.from_user is not None
        )
    query = update.callback_query
    return (
        query is not None
        and bool(query.data)
        and query.message is not None
        and query.message.chat.type == ChatType.PRIVATE
    )


def _prepared(
    messages: Sequence[Outbound], exit_label: str | None
) -> tuple[tuple[str, str | None], ...]:
    """The messages as sent: fitted to Telegram's limits (long texts split, a message's buttons
    under its last part), each text with its keyboard, the exit button under the last one."""
    fitted = fit(messages, CAPABILITIES)
    return tuple(
        (m.text, _keyboard(m, exit_label if i == len(fitted) - 1 else None))
        for i, m in enumerate(fitted)
    )


def _keyboard(message: Outbound, exit_label: str | None) -> str | None:
    """The inline keyboard as the JSON text Telegram takes (cheaper than PTB's objects)."""
    rows = [[{"text": b.label, "callback_data": b.id}] for b in message.buttons]
    if exit_label is not None:
        rows.append([{"text": exit_label, "callback_data": QUICK_EXIT_BUTTON}])
    if not rows:
        return None
    return json.dumps({"inline_keyboard": rows}, ensure_ascii=False, separators=(",", ":"))


def _evidence_file(message: Message) -> tuple[str, str, str | None] | None:
    """(file id, kind, MIME type) of a photo (its largest size) or document; None otherwise:
    stickers, voice and video notes are not evidence a flow takes."""
    if message.photo:
        largest = max(message.photo, key=lambda p: p.file_size or 0)
        return largest.file_id, "photo", "image/jpeg"
    if message.document is not None:
        return message.document.file_id, "document", message.document.mime_type
    return None


def _declared_bytes(message: Message) -> int | None:
    """The size Telegram declares for the file in a message (the largest photo size)."""
    if message.photo:
        return max((p.file_size or 0) for p in message.photo)
    attachment = message.effective_attachment
    size = getattr(attachment, "file_size", None)
    return size if isinstance(size, int) else None
