"""The console in Korean and English: every visible text goes through the catalog, Korean is
complete, the default is Korean, and a counselor's choice is remembered on their browser."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from jinja2 import Environment
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console import catalog_extract
from backend.console.i18n import COOKIE_NAME
from backend.console.sessions import COOKIE_NAME as SESSION_COOKIE
from tests.conftest import Pair, start_hotline
from tests.live_chat_support import add_counselor, origin_of, sign_in

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Not words to translate: protocol and hash names, the product's name, an example code.
_UNTRANSLATED = {"SHA-256", "PDQ", "SLA", "hotline", "K7QX-3M9D-V2TA-8HPE", "WebSocket"}
_VISIBLE_ATTRIBUTES = re.compile(r'\b(?:aria-label|placeholder|title|alt)="([^"]*)"')


def _has_words(text: str) -> list[str]:
    words = re.findall(r"[A-Za-z][A-Za-z0-9-]*", html.unescape(text))
    return [w for w in words if w not in _UNTRANSLATED]


def test_every_console_message_has_a_korean_translation() -> None:
    korean = catalog_extract.read("ko")
    missing, broken = [], []
    for message in catalog_extract.extracted():
        if not message.id:
            continue
        found = korean.get(message.id)
        if found is None or not found.string or found.fuzzy:
            missing.append(message.id)
        elif set(_PLACEHOLDER.findall(str(message.id))) != set(
            _PLACEHOLDER.findall(str(found.string))
        ):
            broken.append(message.id)
    assert not missing, f"no Korean for {missing}: run python -m backend.console.catalog_extract"
    assert not broken, f"the Korean loses or invents a %(name)s placeholder in {broken}"


def test_the_catalogs_hold_exactly_what_the_console_uses() -> None:
    used = {m.id for m in catalog_extract.extracted() if m.id}
    for language in ("ko", "en"):
        held = {m.id for m in catalog_extract.read(language) if m.id}
        assert held == used, f"{language}: run python -m backend.console.catalog_extract"


def test_templates_show_no_text_outside_the_catalog() -> None:
    """Everything a template shows, outside `{{ }}` and `{% %}`, is markup: no words."""
    lexer = Environment(extensions=["jinja2.ext.i18n"], autoescape=True)
    offenders: dict[str, list[str]] = {}
    for path in sorted(Path(catalog_extract.CONSOLE / "templates").glob("*.html")):
        data = "\x00".join(
            value for _line, kind, value in lexer.lex(path.read_text()) if kind == "data"
        )
        attributes = [v for v in _VISIBLE_ATTRIBUTES.findall(data) if _has_words(v)]
        text = re.sub(r"<[^>]*>", " ", data)
        words = _has_words(text) + attributes
        if words:
            offenders[path.name] = words
    assert not offenders, f"visible text outside _(): {offenders}"


async def test_the_console_speaks_korean_until_a_counselor_chooses(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    # The centre's default as shipped (no HOTLINE_CONSOLE_LANGUAGE).
    async with start_hotline(pair, tmp_path, {"HOTLINE_CONSOLE_LANGUAGE": ""}) as hotline:
        client = hotline.client
        page = await (await client.get("/console/login")).text()
        assert '<html lang="ko">' in page
        assert "<h1>로그인</h1>" in page and "Sign in" not in page
        failed = await client.post("/console/login", data={"username": "x", "password": "y"})
        assert "로그인에 실패했습니다" in await failed.text()
        api = await client.get("/api/cases")
        assert (await api.json()) == {"error": "먼저 로그인하세요"}

        chose = await client.post(
            "/console/language",
            data={"language": "en", "next": "/console/login"},
            headers={"Origin": origin_of(hotline)},
            allow_redirects=False,
        )
        assert chose.status == 303 and chose.headers["Location"] == "/console/login"
        assert chose.cookies[COOKIE_NAME].value == "en"
        page = await (await client.get("/console/login")).text()
        assert '<html lang="en">' in page and "<h1>Sign in</h1>" in page

        # The choice outlives the session: signing in and out leaves it.
        await add_counselor(hotline, "minji")
        signed = await sign_in(hotline, "minji")
        cookies = {"Cookie": f"{SESSION_COOKIE}={signed.cookie}; {COOKIE_NAME}=en"}
        queue = await (await client.get("/console", headers=cookies)).text()
        assert '<html lang="en">' in queue and "Waiting cases" in queue
        korean = await (
            await client.get("/console", headers={"Cookie": f"{SESSION_COOKIE}={signed.cookie}"})
        ).text()
        assert "대기 중인 사건" in korean and "Waiting cases" not in korean
        # The pages' scripts get their texts from the same catalog, embedded in the page.
        embedded = re.search(r'id="console-messages">([^<]*)</script>', korean)
        assert embedded is not None
        assert json.loads(embedded.group(1))["%(n)s min"] == "%(n)s분"


async def test_the_language_switch_stays_on_the_console(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {}) as hotline:
        origin = {"Origin": origin_of(hotline)}
        for target in ("https://elsewhere.example/", "//elsewhere.example/console", "/chat"):
            chose = await hotline.client.post(
                "/console/language",
                data={"language": "ko", "next": target},
                headers=origin,
                allow_redirects=False,
            )
            assert chose.headers["Location"] == "/console", target
        unknown = await hotline.client.post(
            "/console/language", data={"language": "xx"}, headers=origin
        )
        assert unknown.status == 400
        foreign = await hotline.client.post(
            "/console/language",
            data={"language": "ko"},
            headers={"Origin": "https://elsewhere.example"},
            allow_redirects=False,
        )
        assert foreign.status == 403
