"""The authorization matrix: every console and API endpoint, for each role and for no session."""

from __future__ import annotations

import re
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from backend import totp
from backend.console.access import (
    ROLE_RANK,
    Access,
    access_of,
    default_language_key,
    guard,
    sessions_key,
)
from backend.console.app_keys import counselors_key
from backend.console.sessions import COOKIE_NAME, ConsoleSession, ConsoleSessionStore
from backend.models import Role
from tests.conftest import RunningHotline

PASSWORD = "a long test passphrase"  # noqa: S105 - test accounts only


def _guarded_routes(app: web.Application) -> list[tuple[str, str, Access]]:
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not path.startswith(("/console", "/api/")):
            continue
        access = access_of(route.handler)
        assert access is not None, f"{route.method} {path} declares no access rule"
        found.append((route.method, re.sub(r"{\w+}", "no-such-id", path), access))
    return found


def _refused(status: int, location: str, body: str) -> bool:
    if status == 401:
        return True
    if status == 303 and location in {"/console/login", "/console/password", "/console/two-factor"}:
        return True
    return status == 403 and ("role may not" in body or "two-factor sign-in required" in body)


async def sign_in_with_code(
    client: TestClient[web.Request, web.Application],
    username: str,
    secret: bytes,
    password: str = PASSWORD,
) -> None:
    """Password, then the TOTP code of this moment: a session signed in with two factors."""
    await _sign_in(client, username, password)
    page = await (await client.get("/console/login/code")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None, page
    code = totp.code_at_step(secret, totp.step_at(time.time()))
    response = await client.post(
        "/console/login/code", data={"csrf": csrf.group(1), "code": code}, allow_redirects=False
    )
    assert response.status == 303, await response.text()


async def _sign_in(
    client: TestClient[web.Request, web.Application], username: str, password: str = PASSWORD
) -> None:
    client.session.cookie_jar.clear()
    response = await client.post(
        "/console/login",
        data={"username": username, "password": password},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()


async def test_every_endpoint_for_every_role_and_no_session(hotline: RunningHotline) -> None:
    client = hotline.client
    counselors = client.app[counselors_key]
    for role in Role:
        await counselors.add(role.value, PASSWORD, role, must_change_password=False)
    await counselors.add("newcomer", PASSWORD, Role.ADMINISTRATOR, must_change_password=True)
    # Password right, TOTP code not yet given: that is no session at all.
    pending = await counselors.add(
        "pending", PASSWORD, Role.ADMINISTRATOR, must_change_password=False
    )
    assert pending.id is not None
    await counselors.enable_totp(pending.id, PASSWORD, totp.new_secret(), 0)
    # The administrator's own routes also need a second factor (issue 15).
    secure = await counselors.add(
        "secure", PASSWORD, Role.ADMINISTRATOR, must_change_password=False
    )
    assert secure.id is not None
    secure_secret = totp.new_secret()
    await counselors.enable_totp(secure.id, PASSWORD, secure_secret, 0)
    routes = _guarded_routes(client.app)
    assert {path for _, path, _ in routes} >= {
        "/console",
        "/api/cases",
        "/api/openapi.json",
        "/api/cases/no-such-id/work",
        "/api/cases/no-such-id/close",
        "/console/takedowns/no-such-id",
        "/api/takedowns/no-such-id/approve",
        "/console/accounts",
        "/console/accounts/no-such-id/role",
        "/console/accounts/no-such-id/deactivate",
        "/console/accounts/no-such-id/reset",
        "/api/accounts",
        "/console/studio",
        "/console/studio/save",
        "/console/studio/check",
        "/console/studio/test",
        "/console/studio/diff",
        "/console/studio/try",
        "/console/studio/publish",
        "/console/studio/rollback/no-such-id",
        "/console/studio/diagram",
        "/console/studio/discard",
    }
    administer = {(m, p) for m, p, a in routes if a is Access.ADMINISTRATOR}
    assert ("POST", "/console/accounts") in administer and ("GET", "/api/accounts") in administer
    assert {p for m, p in administer if p.startswith("/console/studio")} == {
        p for _, p, _ in routes if p.startswith("/console/studio")
    }, "every studio route is the administrator's"
    approve = ("POST", "/api/takedowns/no-such-id/approve", Access.SUPERVISOR)
    assert approve in routes, "a counselor may not approve a takedown request"

    identities: list[tuple[str | None, int, bool]] = [(None, 0, False)]
    identities += [(role.value, ROLE_RANK[role.value], False) for role in Role]
    identities += [("newcomer", ROLE_RANK[Role.ADMINISTRATOR.value], True)]
    identities += [("pending", 0, False)]
    identities += [("secure", ROLE_RANK[Role.ADMINISTRATOR.value], False)]
    for username, rank, must_change in identities:
        if username is None:
            client.session.cookie_jar.clear()
        elif username == "secure":
            await sign_in_with_code(client, username, secure_secret)
        else:
            await _sign_in(client, username)
        for method, path, access in routes:
            response = await client.request(method, path, allow_redirects=False)
            location, body = response.headers.get("Location", ""), await response.text()
            if access is Access.PUBLIC:
                # A failed sign-in is a 401 of the handler's own; never a redirect or a role.
                assert location != "/console/login"
                # The code step answers 401 when no sign-in waits for a code.
                assert response.status not in {401, 403} or path.startswith("/console/login")
                continue
            refused = _refused(response.status, location, body)
            if username in {None, "pending"}:
                allowed = False
            elif must_change:
                allowed = access is Access.PASSWORD_CHANGE
            else:
                allowed = rank >= access.minimum_rank
                if access is Access.ADMINISTRATOR:
                    allowed = allowed and username == "secure"
            assert refused is not allowed, (username, method, path, response.status)


async def test_a_higher_role_may_do_what_a_lower_one_may(redis: Redis) -> None:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    store = ConsoleSessionStore(redis)
    app = web.Application()
    app[sessions_key] = store
    app[default_language_key] = "en"
    app.router.add_get("/api/supervise", guard(Access.SUPERVISOR, ok))
    app.router.add_get("/console/administer", guard(Access.ADMINISTRATOR, ok))
    two_factor = b"s" * 20  # signed in with a second factor, as administrators' routes need
    cookies = {
        role: await store.create(
            ConsoleSession(1, role.value, role.value, False, "csrf", {}, totp_secret=two_factor)
        )
        for role in Role
    }
    one_factor = await store.create(
        ConsoleSession(2, "admin", Role.ADMINISTRATOR.value, False, "csrf", {})
    )
    expected = {
        Role.COUNSELOR: (403, 403),
        Role.SUPERVISOR: (200, 403),
        Role.ADMINISTRATOR: (200, 200),
    }
    async with TestClient(TestServer(app)) as client:
        for role, cookie in cookies.items():
            headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
            supervise = await client.get("/api/supervise", headers=headers)
            administer = await client.get("/console/administer", headers=headers)
            assert (supervise.status, administer.status) == expected[role], role
            if supervise.status == 403:
                assert (await supervise.json()) == {"error": "your role may not do this"}
        without = await client.get(
            "/console/administer",
            headers={"Cookie": f"{COOKIE_NAME}={one_factor}"},
            allow_redirects=False,
        )
        assert without.headers["Location"] == "/console/two-factor"
        anonymous = await client.get("/console/administer", allow_redirects=False)
        assert anonymous.headers["Location"] == "/console/login"


async def test_openapi_describes_every_api_route(hotline: RunningHotline) -> None:
    response = await hotline.client.get("/api/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in hotline.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    described = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert described == served
    cases = document["paths"]["/api/cases"]["get"]
    assert cases["x-hotline-access"] == "counselor"
    assert cases["security"] == [{"consoleSession": []}]
    assert "security" not in document["paths"]["/api/openapi.json"]["get"]
