"""The KakaoTalk door: a Kakao i Open Builder skill server at `POST /kakao/skill`.

Kakao signs nothing, so a request is accepted only with the configured bot id and the secret
header set on the skill. The user's botUserKey becomes a keyed pseudonym at once. Kakao waits
5 s for an answer: a step that takes longer than the budget is answered with `useCallback` and
its real answer is POSTed once to the request's `callbackUrl`. Kakao puts no id on a request,
so an identical body from the same user within a few seconds is treated as a duplicate and
gets the first answer again.

KakaoTalk cannot speak first: a counselor's replies wait (`bot.live`) and come with the answer
to the victim's next message, or through a callback. While a handoff is open, every answer
offers a "check for replies" quick reply, and a message to the counselor is answered with a
short "sent" (Kakao needs an answer to every request).

A message to the counselor (or "check for replies" with nothing there) that comes with a
`callbackUrl` is answered `useCallback` at once ("sent; a reply within a minute shows here"),
and the request is kept open: the counselor's line(s) are POSTed to the callback as soon as one
is held, or, when none came within `callback_wait_ms`, the same "no new replies yet" as the
check button says. A victim who waits for a reply sees it without doing anything; one who
gets none is told plainly and keeps the button. Lines handed to the callback are claimed, not
taken (`HeldLines.claim`): DELIVERED is written only once Kakao accepted the POST, and a POST
that fails puts them back, so they come with the next message instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from backend.core import redis_keys
from backend.core.conversation import Button, Inbound, Outbound, Pseudonym
from backend.core.pseudonyms import Pseudonymizer, Purpose
from backend.core.settings import KakaoSettings
from backend.flows.channels import BUTTON_LABEL_LIMITS
from bot.channel import Capabilities, fit
from bot.inbound_limits import Sender
from bot.live import CHECK_BUTTON, HeldLine, VictimSide
from bot.runtime import NO_REPLIES_KEY, ConversationRuntime, Turn
from bot.turn_replay import TurnInProgressError, TurnReplay

log = logging.getLogger(__name__)

CHANNEL = "kakao"
SECRET_HEADER = "X-Hotline-Kakao-Secret"  # noqa: S105 - a header name, not a secret
MAX_OUTPUTS = 3
MAX_USER_KEY_CHARS = 70
MAX_UTTERANCE_CHARS = 1000
CALLBACK_TIMEOUT_S = 50.0
CALLBACK_POST_TIMEOUT_S = 10.0
# How often a request kept open for a counselor's line looks for one (like the web chat's poll).
LISTEN_CHECK_S = 0.25

CAPABILITIES = Capabilities(
    name=CHANNEL,
    can_delete_messages=False,
    pushes=False,  # only within a callback's minute, or in the answer to the next turn
    max_text_chars=1000,
    max_buttons=10,
    max_button_label_chars=BUTTON_LABEL_LIMITS[CHANNEL],
    max_button_id_bytes=64,
)


class KakaoRequestError(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


@dataclass(frozen=True)
class SkillRequest:
    inbound: Inbound
    callback_url: str | None
    # The user's `Purpose.RATE_LIMIT` pseudonym, which the inbound limits count.
    rate_pseudonym: Pseudonym = field(repr=False)


@dataclass
class _Callback:
    """A request's callback URL: Kakao takes one POST to it, from a slow step's answer or from
    the wait for a counselor's line, whichever takes it first."""

    url: str | None
    taken: bool = False

    def take(self) -> str | None:
        if self.taken or self.url is None:
            return None
        self.taken = True
        return self.url


def _outputs(messages: Sequence[Outbound]) -> list[dict[str, Any]]:
    """Pack texts into at most MAX_OUTPUTS simpleText outputs of at most 1,000 characters."""
    outputs: list[str] = []
    for message in fit(messages, CAPABILITIES):
        if outputs and len(outputs[-1]) + 2 + len(message.text) <= CAPABILITIES.max_text_chars:
            outputs[-1] += "\n\n" + message.text
        else:
            outputs.append(message.text)
    if len(outputs) > MAX_OUTPUTS:
        # Kakao shows three outputs at most. Flows keep a turn far shorter than 3,000
        # characters; should one not, the cut is marked for the victim and logged for us.
        limit = CAPABILITIES.max_text_chars
        tail = "\n\n".join(outputs[MAX_OUTPUTS - 1 :])
        outputs = [*outputs[: MAX_OUTPUTS - 1], tail[: limit - 1] + "…"]
        log.warning("kakao answer longer than %d outputs was cut", MAX_OUTPUTS)
    return [{"simpleText": {"text": text}} for text in outputs]


def render(messages: Sequence[Outbound], *, operator: bool) -> dict[str, Any]:
    """A skill response: texts as simpleText outputs, the last message's buttons as quick replies.

    A quick reply sends its label as the user's utterance (what the victim sees in the chat) and
    our button id in `extra`, which Kakao returns as `action.clientExtra`.
    """
    fitted = fit(messages, CAPABILITIES)
    buttons = fitted[-1].buttons if fitted else ()
    template: dict[str, Any] = {"outputs": _outputs(fitted) or [_empty()]}
    if len(buttons) > CAPABILITIES.max_buttons:
        limit = CAPABILITIES.max_buttons
        log.warning("kakao shows %d quick replies; %d were left out", limit, len(buttons) - limit)
    offer = secrets.token_hex(4)
    quick_replies = [
        {
            "label": b.label,
            "action": "message",
            "messageText": b.label,
            # `offer` tells apart two presses of the same button id on different questions
            # (a "no", then another "no"), which Kakao would otherwise send as one body.
            "extra": {"button": b.id, "offer": offer},
        }
        for b in buttons[: CAPABILITIES.max_buttons]
    ]
    if operator:
        template["outputs"].append(
            {
                "textCard": {
                    "text": "상담원과 바로 이야기하려면 아래 버튼을 누르세요. / Talk to a person:",
                    "buttons": [{"label": "상담원 연결", "action": "operator"}],
                }
            }
        )
        template["outputs"] = template["outputs"][-MAX_OUTPUTS:]
    if quick_replies:
        template["quickReplies"] = quick_replies
    return {"version": "2.0", "template": template}


def _empty() -> dict[str, Any]:
    return {"simpleText": {"text": "…"}}


def parse(payload: Any, settings: KakaoSettings, pseudonymizer: Pseudonymizer) -> SkillRequest:
    if not isinstance(payload, dict):
        raise KakaoRequestError("body must be a JSON object")
    bot = payload.get("bot")
    if not isinstance(bot, dict) or bot.get("id") != settings.bot_id:
        raise web.HTTPForbidden(text=json.dumps({"error": "unknown bot"}))
    user_request = payload.get("userRequest")
    if not isinstance(user_request, dict):
        raise KakaoRequestError("userRequest is missing")
    user = user_request.get("user")
    user_key = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_key, str) or not 0 < len(user_key) <= MAX_USER_KEY_CHARS:
        raise KakaoRequestError("userRequest.user.id is missing or too long")
    utterance = user_request.get("utterance", "")
    if not isinstance(utterance, str) or len(utterance) > MAX_UTTERANCE_CHARS:
        raise KakaoRequestError("userRequest.utterance must be text")
    language = user_request.get("lang")
    action = payload.get("action")
    extra = action.get("clientExtra") if isinstance(action, dict) else None
    button = extra.get("button") if isinstance(extra, dict) else None
    if button is not None and (not isinstance(button, str) or len(button.encode()) > 64):
        raise KakaoRequestError("action.clientExtra.button must be a short id")
    callback_url = user_request.get("callbackUrl")
    if callback_url is not None and (
        not isinstance(callback_url, str) or urlsplit(callback_url).scheme not in {"http", "https"}
    ):
        raise KakaoRequestError("userRequest.callbackUrl must be an http(s) URL")
    if callback_url is not None and not _kakaos(callback_url, settings.callback_hosts):
        # Answered within the request instead: with the secret alone nobody can make us POST
        # elsewhere (issue 18). The URL is not logged: it is a one-time credential.
        log.warning("kakao callbackUrl ignored: its host is not in HOTLINE_KAKAO_CALLBACK_HOSTS")
        callback_url = None
    return SkillRequest(
        Inbound(
            pseudonym=pseudonymizer.pseudonym(Purpose.SESSION, CHANNEL, user_key),
            channel=CHANNEL,
            text=None if button else utterance,
            button=button,
            language=language if isinstance(language, str) and len(language) <= 16 else None,
            blocking=pseudonymizer.pseudonym(Purpose.BLOCKING, CHANNEL, user_key),
        ),
        callback_url,
        pseudonymizer.pseudonym(Purpose.RATE_LIMIT, CHANNEL, user_key),
    )


def _kakaos(url: str, hosts: tuple[str, ...]) -> bool:
    """Whether a callback URL points at one of Kakao's hosts, with no credentials in it."""
    parts = urlsplit(url)
    try:
        _ = parts.port  # a malformed port
    except ValueError:
        return False
    host = (parts.hostname or "").rstrip(".")
    return parts.username is None and parts.password is None and host in hosts


class KakaoDoor:
    def __init__(
        self,
        settings: KakaoSettings,
        runtime: ConversationRuntime,
        pseudonymizer: Pseudonymizer,
        replay: TurnReplay,
        victims: VictimSide | None = None,
    ) -> None:
        """Without `victims`, a counselor's lines come only with the next message."""
        self._settings = settings
        self._runtime = runtime
        self._pseudonymizer = pseudonymizer
        self._replay = replay
        self._victims = victims
        self._http: aiohttp.ClientSession | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    async def close(self) -> None:
        self._closing.set()  # requests kept open for a counselor's line answer now
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=CALLBACK_TIMEOUT_S)
        if self._http is not None:
            await self._http.close()

    def _authentic(self, request: web.Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "")
        return hmac.compare_digest(given.encode(), self._settings.secret.encode())

    async def skill(self, request: web.Request) -> web.Response:
        if not self._authentic(request):
            raise web.HTTPUnauthorized(text=json.dumps({"error": "missing or wrong secret"}))
        self._runtime.metrics.update(CHANNEL)
        raw = await request.read()
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
            raise KakaoRequestError("body must be JSON") from None
        parsed = parse(payload, self._settings, self._pseudonymizer)
        callback = _Callback(parsed.callback_url)
        # Kakao's requests come from Kakao's servers: its address limit is a ceiling per server.
        sender = self._runtime.sender(CHANNEL, parsed.rate_pseudonym, request.remote)
        answer = asyncio.ensure_future(self._answer(parsed.inbound, raw, callback, sender))
        budget_s = self._settings.sync_budget_ms / 1000
        if parsed.callback_url is None:
            budget_s = max(budget_s, 4.5)  # no callback: all we have is Kakao's 5 s
        try:
            body = await asyncio.wait_for(asyncio.shield(answer), budget_s)
        except TimeoutError:
            if parsed.callback_url is None:
                # The step goes on and its session is saved; the victim's next message sees it.
                text = self._runtime.text("common.unavailable", parsed.inbound.language)
                return web.json_response(render([Outbound(text)], operator=False))
            url = callback.take()
            if url is None:  # the answer took the callback at the last moment: it is ready
                body = await answer
            else:
                self._spawn(self._call_back(url, answer))
                wait = self._runtime.text("common.one_moment", parsed.inbound.language)
                return web.json_response(
                    {"version": "2.0", "useCallback": True, "data": {"text": wait}}
                )
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def _answer(
        self, inbound: Inbound, raw: bytes, callback: _Callback, sender: Sender | None = None
    ) -> bytes:
        async def handle() -> bytes:
            turn = await self._runtime.handle(inbound, sender=sender)
            messages = self._with_relay(turn, inbound.language)
            if turn.awaits_reply and self._victims is not None and self._settings.callback_wait_ms:
                url = callback.take()
                if url is not None:
                    self._spawn(self._listen(url, inbound.pseudonym, inbound.language))
                    said = [m.text for m in messages if m.key != NO_REPLIES_KEY]
                    said.append(self._runtime.text("live.waiting_reply", inbound.language))
                    data = {"text": "\n\n".join(said)}
                    interim = {"version": "2.0", "useCallback": True, "data": data}
                    return json.dumps(interim, ensure_ascii=False).encode()
            return json.dumps(
                render(messages, operator=self._settings.operator), ensure_ascii=False
            ).encode()

        duplicate_id = hashlib.sha256(raw).hexdigest()
        try:
            return await self._replay.once(
                inbound.pseudonym, duplicate_id, handle, ttl_s=redis_keys.KAKAO_DUPLICATE_WINDOW_S
            )
        except TurnInProgressError:
            text = self._runtime.text("common.unavailable", inbound.language)
            return json.dumps(render([Outbound(text)], operator=False)).encode()

    async def _listen(self, url: str, pseudonym: Pseudonym, language: str | None) -> None:
        """Keep a request open for the counselor's next line(s), then answer it through the
        callback: with the lines, or with "no new replies yet" when none came in time."""
        victims = self._victims
        if victims is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.callback_wait_ms / 1000
        lines: list[HeldLine] = []
        try:
            while not self._closing.is_set() and loop.time() < deadline:
                if await victims.held.waiting(pseudonym):
                    lines = await victims.held.claim(pseudonym)
                    if lines:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), LISTEN_CHECK_S)
            if not lines:
                session = await self._runtime.session_of(pseudonym)
                if session is None or session.handoff_case is None:
                    # She left (quick exit) or the chat is over: nothing more in her chat.
                    log.info("kakao callback not used: the conversation moved on")
                    return
            said = [Outbound(line.text) for line in lines]
            if not said:
                said = [Outbound(self._runtime.text(NO_REPLIES_KEY, language))]
            check = Button(CHECK_BUTTON, self._runtime.text("live.check", language))
            said[-1] = Outbound(said[-1].text, (check,))
            body = render(said, operator=self._settings.operator)
            posted = await self._post(url, json.dumps(body, ensure_ascii=False).encode())
            if lines and posted:
                await victims.held.sent(pseudonym)
                await victims.delivered(lines)
            elif lines:
                await victims.held.unsent(pseudonym)  # they come with her next message
        except (RedisError, OSError) as exc:
            log.warning("kakao callback wait failed: %s", type(exc).__name__)

    def _with_relay(self, turn: Turn, language: str | None) -> tuple[Outbound, ...]:
        messages = turn.messages
        if turn.live and not messages:
            messages = (Outbound(self._runtime.text("live.sent", language)),)
        last = messages[-1] if messages else None
        if turn.relay and last is not None and len(last.buttons) < CAPABILITIES.max_buttons:
            check = Button(CHECK_BUTTON, self._runtime.text("live.check", language))
            messages = (*messages[:-1], Outbound(last.text, (*last.buttons, check), last.key))
        return messages

    async def _call_back(self, url: str, answer: asyncio.Future[bytes]) -> None:
        await self._post(url, await answer)

    async def _post(self, url: str, body: bytes) -> bool:
        """POST a skill response to a callback URL; True only if Kakao accepted it."""
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=CALLBACK_POST_TIMEOUT_S)
            self._http = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._http.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if not 200 <= response.status < 300:
                    log.warning("kakao callback answered %d", response.status)
                    return False
                try:
                    result = await response.json(content_type=None)
                except ValueError:
                    return True  # accepted, with no body to say more
                status = result.get("status") if isinstance(result, dict) else None
                if status not in (None, "SUCCESS"):
                    log.warning("kakao callback refused: %s", str(status)[:16])
                    return False
                return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("kakao callback failed: %s", type(exc).__name__)
            return False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/kakao/skill", self.skill)
