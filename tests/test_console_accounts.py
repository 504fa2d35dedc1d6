"""Administrators manage accounts in the console (issue 15): add with a one-time password shown
once, change a role, reset, deactivate (sessions end at once, key wraps go, cases go back to the
queue); the last administrator stays."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from backend import totp
from backend.console.access import sessions_key
from backend.console.app_keys import cases_key, counselors_key
from backend.keyring import counselor_holder
from backend.models import AuditEntry, CaseStatus, Role, WrappedPrivateKey
from tests.conftest import RunningHotline
from tests.live_chat_support import PASSWORD, add_counselor, handed_off_case, sign_in
from tests.test_console_access import sign_in_with_code


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def _one_time(page: str) -> str:
    found = re.search(r'id="one-time-password">([^<]+)<', page)
    assert found is not None, page
    return found.group(1)


async def _wraps(engine: AsyncEngine, counselor_id: int) -> int:
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(WrappedPrivateKey)
                .where(col(WrappedPrivateKey.holder) == counselor_holder(counselor_id))
            )
        ).scalar_one()
    return int(count)


async def _audit(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AuditEntry).order_by(col(AuditEntry.seq)))).all()
    return [(r.action, r.subject) for r in rows]


async def test_accounts_add_role_reset_deactivate_and_the_last_administrator(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    client, app = hotline.client, hotline.client.app
    alice = await add_counselor(hotline, "alice")
    alice_session = await sign_in(hotline, "alice")
    assert await app[sessions_key].load(alice_session.cookie) is not None
    handoff = await handed_off_case(hotline, alice)
    boss = await add_counselor(hotline, "boss", Role.ADMINISTRATOR)
    secret = totp.new_secret()
    await app[counselors_key].enable_totp(boss, PASSWORD, secret, 0)
    await sign_in_with_code(client, "boss", secret, PASSWORD)

    page = await (await client.get("/console/accounts")).text()
    assert "alice" in page and "boss" in page
    listed = (await (await client.get("/api/accounts")).json())["accounts"]
    assert {a["username"]: a["two_factor"] for a in listed}["boss"] is True

    # Add: the one-time password is in this answer only, and it signs in once changed.
    response = await client.post(
        "/console/accounts", data={"csrf": _csrf(page), "username": "carol", "role": "supervisor"}
    )
    assert response.status == 200
    added = await response.text()
    first_password = _one_time(added)
    assert first_password not in await (await client.get("/console/accounts")).text()
    carol = next(
        a["id"]
        for a in (await (await client.get("/api/accounts")).json())["accounts"]
        if a["username"] == "carol"
    )
    assert await _wraps(engine, carol) >= 1, "the centre keys are wrapped for her"

    csrf = _csrf(added)
    response = await client.post(
        f"/console/accounts/{carol}/role",
        data={"csrf": csrf, "role": "counselor"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert (await app[counselors_key].get(carol)).role == "counselor"  # type: ignore[union-attr]  # she exists
    reset = await client.post(f"/console/accounts/{carol}/reset", data={"csrf": csrf})
    assert reset.status == 200 and _one_time(await reset.text()) != first_password

    # Deactivate alice: her session ends at once, her wraps go, her case waits again.
    response = await client.post(
        f"/console/accounts/{alice}/deactivate", data={"csrf": csrf}, allow_redirects=False
    )
    assert response.status == 303
    assert await app[sessions_key].load(alice_session.cookie) is None, "signed out at once"
    assert await _wraps(engine, alice) == 0
    case = await app[cases_key].get(handoff.case_id)
    assert case.status == CaseStatus.QUEUED.value and case.claimed_by is None
    again = await client.post(
        "/console/login", data={"username": "alice", "password": PASSWORD}, allow_redirects=False
    )
    assert again.status == 401

    # The first administrator goes; boss is then the last, and stays.
    first_admin = next(
        a["id"]
        for a in (await (await client.get("/api/accounts")).json())["accounts"]
        if a["username"] == "admin"
    )
    page = await (await client.get("/console/accounts")).text()
    csrf = _csrf(page)
    response = await client.post(
        f"/console/accounts/{first_admin}/deactivate", data={"csrf": csrf}, allow_redirects=False
    )
    assert response.status == 303
    demote = await client.post(
        f"/console/accounts/{boss}/role", data={"csrf": csrf, "role": "supervisor"}
    )
    assert demote.status == 409 and "last administrator" in await demote.text()
    leave = await client.post(f"/console/accounts/{boss}/deactivate", data={"csrf": csrf})
    assert leave.status == 409
    assert (await app[counselors_key].get(boss)).role == Role.ADMINISTRATOR.value  # type: ignore[union-attr]  # boss exists

    actions = await _audit(engine)
    assert ("account-add", f"counselor:{carol}") in actions
    assert ("account-role", f"counselor:{carol}") in actions
    assert ("account-reset", str(carol)) in actions
    assert ("account-deactivate", f"counselor:{alice}") in actions
    assert ("release", handoff.case_id) in actions


async def test_a_form_without_the_csrf_token_changes_no_account(hotline: RunningHotline) -> None:
    client, app = hotline.client, hotline.client.app
    boss = await add_counselor(hotline, "boss", Role.ADMINISTRATOR)
    secret = totp.new_secret()
    await app[counselors_key].enable_totp(boss, PASSWORD, secret, 0)
    await sign_in_with_code(client, "boss", secret, PASSWORD)
    response = await client.post("/console/accounts", data={"username": "x", "role": "counselor"})
    assert response.status == 403
    foreign = await client.post(
        f"/console/accounts/{boss}/role",
        data={
            "csrf": _csrf(await (await client.get("/console/accounts")).text()),
            "role": "counselor",
        },
        headers={"Origin": "https://elsewhere.example"},
    )
    assert foreign.status == 403
    assert "x" not in [
        a["username"] for a in (await (await client.get("/api/accounts")).json())["accounts"]
    ]
