"""The console in Korean and English: every visible text goes through the catalog, Korean is
complete, the default is Korean, and a counselor's choice is remembered on their browser."""

from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path

from jinja2 import Environment
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import totp
from backend.accounts import AccountError
from backend.console import catalog_extract
from backend.console.app_keys import counselors_key
from backend.console.i18n import COOKIE_NAME
from backend.console.sessions import COOKIE_NAME as SESSION_COOKIE
from backend.core.errors import N_
from backend.models import Role
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.live_chat_support import PASSWORD, add_counselor, handed_off_case, origin_of, sign_in
from tests.test_console_access import sign_in_with_code

# A named value and its conversion (`%(step)r` quotes a step name as the CLI does).
_PLACEHOLDER = re.compile(r"%\((\w+)\)([a-z])")
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


# Errors raised outside the console that a counselor reads there (issue 16): each must be raised
# with its text marked `N_`, so the catalog holds it and the console can say it in Korean.
_SHOWN_ERRORS = {
    "AccountError",
    "CaseWorkError",
    "ApprovalRequiredError",
    "PublishRefusedError",
    "VersionNotFoundError",
    "ApprovalRefusedError",
}
_RAISED_IN = ("accounts.py", "case_work.py", "takedown.py", "cases.py", "flow_versions.py")


def _unmarked_errors(source: str) -> list[int]:
    """Lines raising one of `_SHOWN_ERRORS` whose text is not an `N_(...)` call."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
            continue
        name = node.exc.func
        if not isinstance(name, ast.Name) or name.id not in _SHOWN_ERRORS:
            continue
        first = node.exc.args[0] if node.exc.args else None
        marked = (
            isinstance(first, ast.Call)
            and isinstance(first.func, ast.Name)
            and first.func.id == "N_"
        )
        if not marked:
            found.append(node.lineno)
    return found


def test_errors_raised_outside_the_console_are_marked_and_extracted() -> None:
    backend = catalog_extract.BACKEND
    offenders = {
        name: lines
        for name in _RAISED_IN
        if (lines := _unmarked_errors((backend / name).read_text(encoding="utf-8")))
    }
    assert not offenders, f"an error a counselor reads, not marked with N_(): {offenders}"
    # And the catch works: an f-string error is found.
    assert _unmarked_errors('raise AccountError(f"a {x}")\n') == [1]
    where = {path for m in catalog_extract.extracted() if m.id for path, _line in m.locations}
    assert {"../accounts.py", "../flow_versions.py", "../takedown.py"} <= where


async def test_errors_from_outside_the_console_are_said_in_korean(
    hotline: RunningHotline,
) -> None:
    """An account refused, a case note refused (through the error middleware's refusals) and a
    flow version refused, each raised outside the console, read in Korean by a Korean console;
    the same errors stay English for an English one and in the CLI's `str()`."""
    client, app = hotline.client, hotline.client.app
    alice = await add_counselor(hotline, "alice")
    boss = await add_counselor(hotline, "boss", Role.ADMINISTRATOR)
    secret = totp.new_secret()
    await app[counselors_key].enable_totp(boss, PASSWORD, secret, 0)
    await sign_in_with_code(client, "boss", secret, PASSWORD)
    client.session.cookie_jar.update_cookies({COOKIE_NAME: "ko"})

    page = await (await client.get("/console/accounts")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    taken = await client.post(
        "/console/accounts", data={"csrf": csrf.group(1), "username": "alice", "role": "counselor"}
    )
    assert taken.status == 400
    said = html.unescape(await taken.text())
    assert "“alice”(이)라는 계정이 이미 있습니다" in said and "exists" not in said

    foreign = await client.post(
        "/console/accounts",
        data={"csrf": csrf.group(1), "username": "x", "role": "counselor"},
        headers={"Origin": "https://elsewhere.example"},
    )
    assert foreign.status == 403
    assert await foreign.text() == "다른 사이트에서 보낸 요청이라 거부했습니다"

    approve = await client.post("/console/studio/approve/99", data={"csrf": csrf.group(1)})
    assert approve.status == 409, await approve.text()
    assert "흐름 버전 99이(가) 없습니다" in html.unescape(await approve.text())

    handoff = await handed_off_case(hotline, alice)
    alice_session = await sign_in(hotline, "alice")
    note = await client.post(
        f"/api/cases/{handoff.case_id}/notes",
        json={"text": "  "},
        headers={
            **alice_session.api_headers(),
            "Cookie": alice_session.api_headers()["Cookie"] + f"; {COOKIE_NAME}=ko",
        },
    )
    assert note.status == 400
    assert await note.json() == {"error": "메모이(가) 비어 있습니다"}
    english = await client.post(
        f"/api/cases/{handoff.case_id}/notes",
        json={"text": "  "},
        headers={
            **alice_session.api_headers(),
            "Cookie": alice_session.api_headers()["Cookie"] + f"; {COOKIE_NAME}=en",
        },
    )
    assert await english.json() == {"error": "the note is empty"}
    assert str(AccountError(N_("an account named “%(name)s” exists"), name="alice")) == (
        "an account named “alice” exists"
    )
