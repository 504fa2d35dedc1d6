"""A fake Telegram Bot API server: the real protocol over real HTTP on 127.0.0.1.

Telegram's servers lie outside this machine, so the tests stand one in for them. It speaks what
python-telegram-bot really sends (POST `<base_url><token>/<method>`, parameters form-encoded,
multipart or JSON) and answers with the Bot API's own JSON shapes, so the door under test runs
its real `Application`, `Updater` and HTTP client unchanged.

Parameters are kept the way the Bot API defines them: every value is a string, and structured
ones (`reply_markup`, booleans, numbers) are JSON-serialised. A JSON body is normalised to the
same form, so a test reads a call the same way whichever encoding the client chose.

WARNING: test code. It holds what the "victim" typed in memory, in clear, on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

JSONDict = dict[str, Any]

# What a bot receives when it never asked for a list (Bot API, getUpdates `allowed_updates`).
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
MAX_MESSAGE_CHARS = 4096
MAX_UPDATES_LIMIT = 100
# What a user can send besides text, as `send_attachment` builds it.
ATTACHMENT_KINDS = ("photo", "sticker", "voice", "document")


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request as the server saw it, with the result it answered."""

    method: str
    params: dict[str, str]
    result: Any = None
    at: float = field(default_factory=time.monotonic)  # when the server answered

    def json(self, name: str) -> Any:
        """A JSON-serialised parameter (`reply_markup`, `protect_content`, `chat_id`), decoded."""
        return json.loads(self.params[name])

    def callback_data(self) -> list[str]:
        """The callback data of every inline button, row by row; empty without a keyboard."""
        if "reply_markup" not in self.params:
            return []
        rows = self.json("reply_markup")["inline_keyboard"]
        return [button["callback_data"] for row in rows for button in row]


@dataclass
class _Chat:
    info: JSONDict
    messages: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class BotApiError(Exception):
    """A Bot API error answer: `{"ok": false, "error_code": ..., "description": ...}`, with
    `parameters` (e.g. `{"retry_after": 3}` on a 429) where Telegram sends them."""

    def __init__(self, code: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


WEBHOOK_CONNECTIONS = 8
WEBHOOK_ATTEMPTS = 100


@dataclass(frozen=True)
class SendLimits:
    """Telegram's flood control on sendMessage, as moving windows counted where calls arrive:
    at most `per_bot` a `bot_window_s` for the bot, `per_chat` a `chat_window_s` for one chat.
    A call over either is answered 429 with `retry_after` (whole seconds, as Telegram sends)."""

    per_bot: int = 30
    bot_window_s: float = 1.0
    per_chat: int = 3
    chat_window_s: float = 3.0
    retry_after_s: int = 1


def _chat_id_of(update: JSONDict) -> int:
    """The chat an update belongs to (0 for none), to keep one chat's updates in order."""
    for value in update.values():
        if isinstance(value, dict):
            chat = value.get("chat") or (value.get("message") or {}).get("chat") or {}
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                return int(chat["id"])
    return 0


class FakeTelegram:
    """The Bot API for one bot token: getMe, getUpdates (long polling), setWebhook and
    deleteWebhook (webhook delivery: each update POSTed in order, secret token in the header),
    sendMessage, deleteMessages, answerCallbackQuery, answerInlineQuery, leaveChat, getFile and
    file downloads; any other method is 404, as on Telegram.

    `max_hold_s` caps how long an empty getUpdates is held whatever `timeout` the client asks
    for, so a polling client notices a stop quickly and tests stay fast. `fail_next` makes the
    server answer a method's next call with an error, as Telegram sometimes does.
    """

    def __init__(
        self, token: str, *, max_hold_s: float = 0.5, send_limits: SendLimits | None = None
    ) -> None:
        """`send_limits`: answer sendMessage over Telegram's flood limits with 429 (none by
        default: most tests are about other things)."""
        self.token = token
        self.send_limits = send_limits
        self.rate_limited = 0  # sendMessage calls answered 429
        self._bot_sends: list[float] = []
        self._chat_sends: dict[int, list[float]] = {}
        self.bot_id = int(token.split(":", 1)[0])
        self.max_hold_s = max_hold_s
        self.calls: list[ApiCall] = []
        self._pending: list[JSONDict] = []
        self.delivered: list[JSONDict] = []
        self.downloads = 0
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._allowed = DEFAULT_UPDATE_TYPES
        self._chats: dict[int, _Chat] = {}
        self._files: dict[str, tuple[str, bytes]] = {}
        self._left: set[int] = set()
        self._failures: dict[str, list[BotApiError]] = {}
        self._messages: dict[tuple[int, int], JSONDict] = {}  # (chat id, message id) -> message
        self.deleted: set[tuple[int, int]] = set()
        self.blocked_by: set[int] = set()  # users who blocked the bot (sendMessage is 403)
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.webhook_statuses: list[int] = []
        # What the last setWebhook asked for (Telegram's default, 40, when it did not say), and
        # how many updates this fake pushes at once (fewer: it shares the machine with the bot).
        self.webhook_max_connections: int | None = None
        self.webhook_connections = WEBHOOK_CONNECTIONS
        self._webhook_queue: asyncio.Queue[JSONDict] = asyncio.Queue()
        self._webhook_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.me: JSONDict = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Hotline Test",
            "username": "hotline_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    @property
    def base_url(self) -> str:
        """What a PTB `Bot` takes as `base_url`: the token and `/<method>` are appended."""
        return f"http://127.0.0.1:{self._port}/bot"

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()

    async def stop(self) -> None:
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # What a user does in the Telegram app, turned into queued updates.

    @staticmethod
    def user(user_id: int, first_name: str, language_code: str | None = None) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code is not None:
            user["language_code"] = language_code
        return user

    @staticmethod
    def private_chat(user: JSONDict) -> JSONDict:
        return {"id": user["id"], "type": "private", "first_name": user["first_name"]}

    @staticmethod
    def group_chat(chat_id: int, title: str, *, supergroup: bool = False) -> JSONDict:
        return {"id": chat_id, "type": "supergroup" if supergroup else "group", "title": title}

    def open_chat(self, chat: JSONDict) -> None:
        """A chat the bot may write to, for updates a test POSTs to a webhook itself."""
        self._chats.setdefault(chat["id"], _Chat(chat))

    async def send_text(self, user: JSONDict, chat: JSONDict, text: str) -> JSONDict:
        """The user sends `text` in `chat`; a leading /command is marked as Telegram does."""
        message = self._message(chat, user, text)
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        await self._queue({"message": message})
        return message

    async def press(self, user: JSONDict, message: JSONDict, data: str) -> str:
        """The user presses the inline button `data` under `message`; the callback query id."""
        query_id = f"cbq-{next(self._callback_ids)}"
        self._open_callbacks.add(query_id)
        chat_instance = str(abs(hash((message["chat"]["id"], self.bot_id))))
        query = {
            "id": query_id,
            "from": user,
            "message": message,
            "chat_instance": chat_instance,
            "data": data,
        }
        await self._queue({"callback_query": query})
        return query_id

    async def edit_text(self, user: JSONDict, message: JSONDict, text: str) -> JSONDict:
        """The user edits a message they sent earlier; Telegram sends an `edited_message`."""
        edited = {**message, "from": user, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        await self._queue({"edited_message": edited})
        return edited

    async def send_attachment(
        self,
        user: JSONDict,
        chat: JSONDict,
        kind: str,
        *,
        caption: str | None = None,
        content: bytes | None = None,
    ) -> JSONDict:
        """The user sends a photo, sticker, voice message or document (see `ATTACHMENT_KINDS`),
        with an optional caption. Its bytes (`content`, or zeros) stay on the server, fetchable
        through getFile, as on Telegram; the message carries only file ids and facts."""
        message = self._message(chat, user, None)
        message[kind] = self._attachment(kind, content)
        if caption is not None:
            message["caption"] = caption
        await self._queue({"message": message})
        return message

    def add_file(self, content: bytes, *, folder: str = "documents") -> str:
        """A file the user sent earlier, kept on the server; its `file_id`."""
        number = len(self._files) + 1
        file_id = f"file-{number}"
        self._files[file_id] = (f"{folder}/file_{number}.bin", content)
        return file_id

    def fail_next(
        self, method: str, code: int, description: str, parameters: JSONDict | None = None
    ) -> None:
        """Answer the next call to `method` with this Bot API error instead of doing it."""
        error = BotApiError(code, description, parameters)
        self._failures.setdefault(method.lower(), []).append(error)

    async def queue_raw(self, update: JSONDict) -> None:
        """Deliver any update as given (an `update_id` is added when missing): unknown kinds,
        malformed ones, channel posts, inline queries."""
        async with self._changed:
            if "update_id" not in update:
                update = {"update_id": next(self._update_ids), **update}
            await self._deliver(update)

    async def redeliver(self, update_id: int) -> None:
        """Send an update again, as Telegram does after a failed webhook call or a restart."""
        for update in self.delivered:
            if update["update_id"] == update_id:
                async with self._changed:
                    await self._deliver(update)
                return
        raise KeyError(update_id)

    def message(self, chat_id: int, message_id: int) -> JSONDict | None:
        """A message still in the chat (sent by the bot or the user), None once deleted."""
        if (chat_id, message_id) in self.deleted:
            return None
        return self._messages.get((chat_id, message_id))

    def messages_in(self, chat_id: int) -> list[int]:
        """Ids of every message still in the chat, both sides."""
        return sorted(m for (c, m) in self._messages if c == chat_id and (c, m) not in self.deleted)

    # What the bot did, for assertions.

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, method: str, count: int, *, timeout_s: float = 5.0) -> list[ApiCall]:
        """All calls to `method` once there are at least `count`; fails after `timeout_s`."""

        def enough() -> bool:
            return len(self.calls_to(method)) >= count

        async with self._changed:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(enough)
            except TimeoutError:
                seen = [
                    (c.method, c.params.get("text", ""))
                    for c in self.calls
                    if c.method != "getUpdates"
                ]
                raise AssertionError(
                    f"expected {count} {method} call(s) within {timeout_s} s; saw {seen}"
                ) from None
        return self.calls_to(method)

    async def wait_for_webhook_answers(self, count: int, *, timeout_s: float = 10.0) -> None:
        """Until the webhook has answered at least `count` pushes (any status)."""
        async with self._changed, asyncio.timeout(timeout_s):
            await self._changed.wait_for(lambda: len(self.webhook_statuses) >= count)

    # The Bot API.

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(BotApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        handler = self._methods().get(method.lower())
        if handler is None:
            return _error(BotApiError(404, "Not Found"))
        params = await _parameters(request)
        try:
            failures = self._failures.get(method.lower())
            if failures:
                raise failures.pop(0)
            result = await handler(params)
        except BotApiError as exc:
            await self._record(ApiCall(method, params))
            return _error(exc)
        await self._record(ApiCall(method, params, result))
        return web.json_response({"ok": True, "result": result})

    def _methods(self) -> dict[str, Callable[[dict[str, str]], Awaitable[Any]]]:
        # The Bot API matches method names case-insensitively.
        return {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "sendmessage": self._send_message,
            "deletemessages": self._delete_messages,
            "answerinlinequery": self._answer_inline_query,
            "answercallbackquery": self._answer_callback_query,
            "leavechat": self._leave_chat,
            "getfile": self._get_file,
        }

    async def _get_me(self, _params: dict[str, str]) -> JSONDict:
        return self.me

    async def _set_webhook(self, params: dict[str, str]) -> bool:
        self.webhook_url = params["url"]
        self.webhook_secret = params.get("secret_token")
        self.webhook_max_connections = _int(params, "max_connections", 40)
        if "allowed_updates" in params:
            allowed = json.loads(params["allowed_updates"])
            self._allowed = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        if self._webhook_task is None:
            self._webhook_task = asyncio.create_task(self._push_webhooks())
        async with self._changed:  # what was waiting for getUpdates now goes to the webhook
            for update in self._pending:
                self._webhook_queue.put_nowait(update)
            self._pending.clear()
        return True

    async def _push_webhooks(self) -> None:
        """Telegram's side of a webhook: POST each update, the secret in a header, over several
        connections at once (Telegram's max_connections), one chat's updates one after another;
        an update answered with a 5xx or not at all is tried again."""
        chats: dict[int, asyncio.Lock] = {}
        connections = asyncio.Semaphore(self.webhook_connections)
        pushing: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as http:
            try:
                while True:
                    update = await self._webhook_queue.get()
                    if self.webhook_url is None or not self._wanted(update):
                        continue
                    lock = chats.setdefault(_chat_id_of(update), asyncio.Lock())
                    task = asyncio.create_task(self._push_one(http, update, lock, connections))
                    pushing.add(task)
                    task.add_done_callback(pushing.discard)
            finally:
                for task in pushing:
                    task.cancel()

    async def _push_one(
        self,
        http: aiohttp.ClientSession,
        update: JSONDict,
        chat: asyncio.Lock,
        connections: asyncio.Semaphore,
    ) -> None:
        async with chat, connections:
            for _attempt in range(WEBHOOK_ATTEMPTS):
                if self.webhook_url is None:  # the URL may change (another worker's setWebhook)
                    return
                headers = {}
                if self.webhook_secret is not None:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
                try:
                    async with http.post(
                        self.webhook_url, json=update, headers=headers
                    ) as response:
                        status = response.status
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
                    continue
                async with self._changed:
                    self.webhook_statuses.append(status)
                    self._changed.notify_all()
                if status < 500:
                    return
                await asyncio.sleep(0.05)

    async def _delete_messages(self, params: dict[str, str]) -> bool:
        chat_id = _int(params, "chat_id", 0)
        ids = json.loads(params.get("message_ids", "[]"))
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise BotApiError(400, "Bad Request: message_ids must have 1-100 elements")
        for message_id in ids:
            self.deleted.add((chat_id, int(message_id)))
        return True

    async def _answer_inline_query(self, params: dict[str, str]) -> bool:
        return "inline_query_id" in params

    async def _delete_webhook(self, params: dict[str, str]) -> bool:
        self.webhook_url = None
        if _flag(params, "drop_pending_updates"):
            async with self._changed:
                self._pending.clear()
        return True

    async def _get_updates(self, params: dict[str, str]) -> list[JSONDict]:
        if self.webhook_url is not None:
            raise BotApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = _int(params, "offset", 0)
        limit = min(max(_int(params, "limit", MAX_UPDATES_LIMIT), 1), MAX_UPDATES_LIMIT)
        hold_s = min(max(_float(params, "timeout", 0.0), 0.0), self.max_hold_s)
        if "allowed_updates" in params:
            allowed = json.loads(params["allowed_updates"])
            self._allowed = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        async with self._changed:
            deadline = time.monotonic() + hold_s
            while True:
                # Telegram forgets every update below the offset (they are confirmed) and never
                # makes the kinds the bot did not ask for.
                self._pending = [
                    u for u in self._pending if u["update_id"] >= offset and self._wanted(u)
                ]
                remaining = deadline - time.monotonic()
                if self._pending or self._closing or remaining <= 0:
                    return self._pending[:limit]
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    return []

    async def _send_message(self, params: dict[str, str]) -> JSONDict:
        chat_id = _int(params, "chat_id", 0)
        chat = self._chats.get(chat_id)
        if chat is None:
            raise BotApiError(400, "Bad Request: chat not found")
        if chat_id in self._left:
            raise BotApiError(403, "Forbidden: bot is not a member of the group chat")
        if chat_id in self.blocked_by:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        self._flood_control(chat_id)
        text = params.get("text", "")
        if not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise BotApiError(400, "Bad Request: message is too long")
        message = self._message(chat.info, self.me, text, message_id=next(chat.messages))
        if "reply_markup" in params:
            message["reply_markup"] = json.loads(params["reply_markup"])
        if _flag(params, "protect_content"):
            message["has_protected_content"] = True
        return message

    def _flood_control(self, chat_id: int) -> None:
        limits = self.send_limits
        if limits is None:
            return
        now = time.monotonic()
        bot = self._bot_sends = [t for t in self._bot_sends if t > now - limits.bot_window_s]
        chat = [t for t in self._chat_sends.get(chat_id, []) if t > now - limits.chat_window_s]
        self._chat_sends[chat_id] = chat
        if len(bot) >= limits.per_bot or len(chat) >= limits.per_chat:
            self.rate_limited += 1
            raise BotApiError(
                429,
                f"Too Many Requests: retry after {limits.retry_after_s}",
                {"retry_after": limits.retry_after_s},
            )
        bot.append(now)
        chat.append(now)

    async def _answer_callback_query(self, params: dict[str, str]) -> bool:
        query_id = params.get("callback_query_id", "")
        if query_id not in self._open_callbacks:
            raise BotApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self._open_callbacks.discard(query_id)
        return True

    async def _leave_chat(self, params: dict[str, str]) -> bool:
        chat_id = _int(params, "chat_id", 0)
        chat = self._chats.get(chat_id)
        if chat is None:
            raise BotApiError(400, "Bad Request: chat not found")
        if chat.info["type"] == "private":
            raise BotApiError(
                400, "Bad Request: chat member status can't be changed in private chats"
            )
        if chat_id in self._left:
            raise BotApiError(403, "Forbidden: bot is not a member of the group chat")
        self._left.add(chat_id)
        return True

    async def _get_file(self, params: dict[str, str]) -> JSONDict:
        file_id = params.get("file_id", "")
        if file_id not in self._files:
            raise BotApiError(400, "Bad Request: invalid file_id")
        path, content = self._files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": "u" + file_id,
            "file_size": len(content),
            "file_path": path,
        }

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(BotApiError(401, "Unauthorized"))
        self.downloads += 1
        for path, content in self._files.values():
            if path == request.match_info["path"]:
                return web.Response(body=content, content_type="application/octet-stream")
        return _error(BotApiError(404, "Not Found"))

    # Bookkeeping.

    def _message(
        self, chat: JSONDict, sender: JSONDict, text: str | None, *, message_id: int | None = None
    ) -> JSONDict:
        known = self._chats.setdefault(chat["id"], _Chat(chat))
        message: JSONDict = {
            "message_id": next(known.messages) if message_id is None else message_id,
            "from": sender,
            "chat": chat,
            "date": int(time.time()),
        }
        if text is not None:
            message["text"] = text
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _attachment(self, kind: str, content: bytes | None = None) -> JSONDict | list[JSONDict]:
        """The Bot API object for an attachment of `kind`, its bytes kept on the server: the
        `content` given (the largest size of a photo), or zeros."""

        def file(folder: str, size: int, data: bytes | None = None) -> JSONDict:
            data = b"\x00" * size if data is None else data
            file_id = self.add_file(data, folder=folder)
            return {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(data)}

        if kind == "photo":  # every size Telegram made of the picture, smallest first
            return [
                {**file("photos", 64), "width": 90, "height": 90},
                {**file("photos", 256, content), "width": 1280, "height": 1280},
            ]
        if kind == "sticker":
            return {
                **file("stickers", 128),
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        if kind == "voice":
            return {**file("voice", 96), "duration": 3, "mime_type": "audio/ogg"}
        if kind == "document":
            return {
                **file("documents", 160, content),
                "file_name": "scan.pdf",
                "mime_type": "application/pdf",
            }
        raise ValueError(f"unknown attachment kind {kind!r}; known: {ATTACHMENT_KINDS}")

    async def _queue(self, update: JSONDict) -> None:
        async with self._changed:
            await self._deliver({"update_id": next(self._update_ids), **update})

    async def _deliver(self, update: JSONDict) -> None:
        """Hand an update to the bot: pushed to the webhook if one is set, else kept for
        getUpdates. The caller holds `_changed`."""
        self.delivered.append(update)
        if self.webhook_url is not None:
            self._webhook_queue.put_nowait(update)
        else:
            self._pending.append(update)
        self._changed.notify_all()

    async def _record(self, call: ApiCall) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    @staticmethod
    def _kind(update: JSONDict) -> str:
        return next((key for key in update if key != "update_id"), "")

    def _wanted(self, update: JSONDict) -> bool:
        """Whether the bot asked for this kind; kinds newer than the bot's list still come."""
        kind = self._kind(update)
        return kind not in DEFAULT_UPDATE_TYPES or kind in self._allowed


async def _parameters(request: web.Request) -> dict[str, str]:
    """The request's parameters as the Bot API reads them, whatever the encoding."""
    params = {key: value for key, value in request.query.items()}
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="a JSON body must be an object")
        for key, value in body.items():
            params[key] = value if isinstance(value, str) else json.dumps(value)
        return params
    for key, value in (await request.post()).items():
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, bytes | bytearray):
            params[key] = value.decode()
        else:  # an uploaded file: keep its name; the bytes are not the point here
            params[key] = f"attach://{value.filename}"
    return params


def _error(exc: BotApiError) -> web.Response:
    body: JSONDict = {"ok": False, "error_code": exc.code, "description": exc.description}
    if exc.parameters is not None:
        body["parameters"] = exc.parameters
    return web.json_response(body, status=exc.code)


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BotApiError(400, f"Bad Request: invalid {name}") from None


def _float(params: dict[str, str], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BotApiError(400, f"Bad Request: invalid {name}") from None


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() in {"true", "1"}
