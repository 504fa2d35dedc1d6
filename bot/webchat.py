"""The web chat door at `/chat`: for victims who will not or cannot use a messenger.

No account and nothing kept in the browser but a random conversation token for the tab
(sessionStorage). The token never reaches storage: it is turned into a keyed pseudonym at once.

A turn's answer is `{"messages": [{"text", "buttons", "receipt"?}], "ended", "relay"}`.
`receipt` is on the message that shows a receipt code issued in this very turn (the
`IssueReceipt` effect), so the page can offer to copy it without reading codes out of the words
of any locale.

While a handoff is open, the page also asks for a counselor's replies with a long poll
(`POST /chat/api/poll`): the request waits up to `POLL_WAIT_S` for a held line (`bot.live`)
and answers as soon as one is there. It looks every `POLL_CHECK_S` rather than block on Redis,
so an open tab holds no Redis connection while it waits.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from importlib import resources
from typing import Any

from aiohttp import web

from backend.core.conversation import MAX_TEXT_CHARS, Effect, Inbound, IssueReceipt, Outbound
from backend.core.errors import HotlineError
from backend.core.pseudonyms import Pseudonymizer, Purpose
from backend.flows.channels import BUTTON_LABEL_LIMITS
from bot import chat_languages
from bot.channel import Capabilities, fit
from bot.live import HeldLines
from bot.runtime import ConversationRuntime, Turn
from bot.turn_replay import TurnInProgressError, TurnReplay

CHANNEL = "web"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_TURN_ID = re.compile(r"^[A-Za-z0-9_-]{16,43}$")
_BUTTON = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$")
STATIC_FILES = {
    "chat.js": "text/javascript",
    "chat_live.js": "text/javascript",
    "chat.css": "text/css",
    "index.html": "text/html",
    "icon.svg": "image/svg+xml",  # a plain note, so the tab shows nothing alarming
}
# A turn is a token, a few ids and at most MAX_TEXT_CHARS of text: far below this. The app's
# own cap (1 MiB, for the console) is too generous for a door anyone can reach (issue 18).
MAX_BODY_BYTES = 64 * 1024
# What a busy server asks the page to wait before sending the same turn again.
RETRY_AFTER_S = 1
# A long poll answers within this (well under common proxy time-outs), empty if nothing came.
POLL_WAIT_S = 20.0
POLL_CHECK_S = 0.25

runtime_key = web.AppKey("webchat_runtime", ConversationRuntime)
replay_key = web.AppKey("webchat_replay", TurnReplay)
pseudonymizer_key = web.AppKey("webchat_pseudonymizer", Pseudonymizer)
held_key = web.AppKey("webchat_held", HeldLines)
poll_wait_key = web.AppKey("webchat_poll_wait_s", float)


def _static(name: str) -> bytes:
    return (resources.files("bot") / "webchat_static" / name).read_bytes()


def unavailable(reason: str) -> web.HTTPServiceUnavailable:
    """503 with Retry-After: the turn was not handled, and the page sends it again with the
    same turn id. Never a 200 carrying an error text, which the page would show and forget
    (issue 18)."""
    return web.HTTPServiceUnavailable(
        text=json.dumps({"error": reason}),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class TurnFailedError(HotlineError):
    """The runtime could not run the turn (Redis out of reach or out of connections)."""


class BadTurnError(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


class TurnTooLargeError(web.HTTPRequestEntityTooLarge):
    def __init__(self, size: int) -> None:
        super().__init__(
            max_size=MAX_BODY_BYTES,
            actual_size=size,
            text=json.dumps(
                {"error": f"a message may be at most {MAX_BODY_BYTES // 1024} KiB; send less"}
            ),
            content_type="application/json",
        )


async def _json_body(request: web.Request) -> Any:
    """The body as JSON, read no further than `MAX_BODY_BYTES` whatever the request declares
    (a chunked body declares nothing)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise TurnTooLargeError(declared)
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TurnTooLargeError(len(body))
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        raise BadTurnError("body must be JSON") from None


async def page(request: web.Request) -> web.Response:
    """The chat page, offering every language with complete safety texts, the browser's own
    preferred one chosen (each named in itself, so a victim finds theirs)."""
    offered = request.app[runtime_key].offered_languages()
    chosen = chat_languages.preferred(request.headers.get("Accept-Language", ""), offered)
    body = _static("index.html").decode()
    body = body.replace('<html lang="ko">', f'<html lang="{html.escape(chosen)}">', 1)
    body = body.replace("<!-- languages -->", chat_languages.options(offered, chosen), 1)
    return web.Response(text=body, content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES or name == "index.html":
        raise web.HTTPNotFound()
    response = web.Response(body=_static(name), content_type=STATIC_FILES[name], charset="utf-8")
    return response


def parse_turn(payload: Any, pseudonymizer: Pseudonymizer) -> Inbound:
    """Check a web chat turn field by field; anything odd is a clear 400, never a traceback."""
    if not isinstance(payload, dict):
        raise BadTurnError("body must be a JSON object")
    token = payload.get("token")
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise BadTurnError("token must be 43 URL-safe characters")
    text = payload.get("text")
    button = payload.get("button")
    language = payload.get("language")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
        raise BadTurnError(f"text must be a string of at most {MAX_TEXT_CHARS} characters")
    if button is not None and (not isinstance(button, str) or not _BUTTON.match(button)):
        raise BadTurnError("button must be a short identifier")
    if language is not None and (not isinstance(language, str) or not _LANGUAGE.match(language)):
        raise BadTurnError("language must be a language tag such as ko or en")
    return Inbound(
        pseudonym=pseudonymizer.pseudonym(Purpose.SESSION, CHANNEL, token),
        channel=CHANNEL,
        text=text,
        button=button,
        language=language,
        blocking=pseudonymizer.pseudonym(Purpose.BLOCKING, CHANNEL, token),
    )


CAPABILITIES = Capabilities(
    name=CHANNEL,
    can_delete_messages=False,  # the page erases itself on quick exit instead
    pushes=False,  # the page asks; a counselor's reply waits for its next request
    max_text_chars=MAX_TEXT_CHARS,
    max_buttons=20,
    max_button_label_chars=BUTTON_LABEL_LIMITS[CHANNEL],
    max_button_id_bytes=64,
)


def render(message: Outbound) -> dict[str, Any]:
    return {
        "text": message.text,
        "buttons": [{"id": b.id, "label": b.label} for b in message.buttons],
    }


def render_turn(messages: list[Outbound], effects: tuple[Effect, ...]) -> list[dict[str, Any]]:
    """The messages as the page gets them, the receipt issued in this turn on the first message
    that shows it (or on the last one, should a locale's text leave the code out)."""
    rendered = [render(m) for m in messages]
    codes = [e.code for e in effects if isinstance(e, IssueReceipt)]
    if codes and rendered:
        code = codes[-1]
        showing = [m for m in rendered if code in m["text"]]
        (showing or rendered[-1:])[0]["receipt"] = code
    return rendered


def answer_body(result: Turn) -> bytes:
    """A turn's answer as the page reads it."""
    messages = fit(result.messages, CAPABILITIES)
    answer = {
        "messages": render_turn(messages, result.effects),
        "ended": result.quick_exit,
        "relay": result.relay,
    }
    return json.dumps(answer, ensure_ascii=False).encode()


async def turn(request: web.Request) -> web.Response:
    request.app[runtime_key].metrics.update(CHANNEL)
    payload = await _json_body(request)
    inbound = parse_turn(payload, request.app[pseudonymizer_key])
    turn_id = payload.get("turn")
    if turn_id is not None and (not isinstance(turn_id, str) or not _TURN_ID.match(turn_id)):
        raise BadTurnError("turn must be 16 to 43 URL-safe characters")

    runtime = request.app[runtime_key]
    rate_pseudonym = request.app[pseudonymizer_key].pseudonym(
        Purpose.RATE_LIMIT, CHANNEL, payload["token"]
    )
    # The client address as the trusted proxy gave it (`backend.forwarded`), hashed at once.
    sender = runtime.sender(CHANNEL, rate_pseudonym, request.remote)

    replay = request.app[replay_key]

    def record(result: Turn) -> tuple[str, bytes, int]:
        assert turn_id is not None  # noqa: S101 - only passed with a turn id
        return replay.answer_record(inbound.pseudonym, turn_id, answer_body(result))

    async def handle() -> bytes:
        result = await runtime.handle(
            inbound, sender=sender, record=None if turn_id is None else record
        )
        if result.failed:
            # Not stored as the turn's answer: the retry runs the turn again.
            raise TurnFailedError("the turn did not run")
        return answer_body(result)

    try:
        if turn_id is None:
            body = await handle()
        else:
            body = await replay.once(inbound.pseudonym, turn_id, handle)
    except TurnInProgressError:
        raise unavailable("still working on this message; retry") from None
    except TurnFailedError:
        raise unavailable("the message was not handled; send it again") from None
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def poll(request: web.Request) -> web.Response:
    """Held replies for this tab's conversation, waiting up to `POLL_WAIT_S` for one;
    `relay: false` once no handoff is open (the page stops asking)."""
    payload = await _json_body(request)
    if isinstance(payload, dict) and set(payload) - {"token", "language"}:
        raise BadTurnError("a poll carries only the token")
    pseudonym = parse_turn(payload, request.app[pseudonymizer_key]).pseudonym
    runtime = request.app[runtime_key]
    held = request.app[held_key]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[poll_wait_key]
    messages, relay = await runtime.held_for(pseudonym)
    while relay and not messages and loop.time() < deadline:
        await asyncio.sleep(POLL_CHECK_S)
        if await held.waiting(pseudonym):
            messages, relay = await runtime.held_for(pseudonym)
    answer = {"messages": [render(m) for m in fit(messages, CAPABILITIES)], "relay": relay}
    return web.json_response(answer)


def add_routes(
    app: web.Application,
    runtime: ConversationRuntime,
    pseudonymizer: Pseudonymizer,
    replay: TurnReplay,
    held: HeldLines,
    *,
    poll_wait_s: float = POLL_WAIT_S,
) -> None:
    app[runtime_key] = runtime
    app[replay_key] = replay
    app[pseudonymizer_key] = pseudonymizer
    app[held_key] = held
    app[poll_wait_key] = poll_wait_s
    app.router.add_get("/chat", page)
    app.router.add_get("/chat/static/{name}", static)
    app.router.add_post("/chat/api/turn", turn)
    app.router.add_post("/chat/api/poll", poll)
