"""The queue, claims, releases, transfers, shifts and the supervisors' view, over the JSON API and
the pages, on the real composed app and both backend pairs."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from sqlalchemy import update
from sqlmodel import col, select

from backend.console.access import Access
from backend.console.app_keys import cases_key, counselors_key, keyring_key
from backend.console.queue import CLAIM_LOST, sla_state
from backend.core import redis_keys as streams
from backend.core.errors import SettingsError
from backend.core.sealing import RoutingHeader, seal
from backend.core.settings import Settings, SlaPolicy
from backend.core.shifts import ShiftBoard
from backend.models import AuditEntry, Case, Role, utcnow
from backend.web import engine_key
from tests.conftest import RunningHotline
from tests.test_console import csrf_of
from tests.test_console_access import _guarded_routes

PASSWORD = "a long queue passphrase"  # noqa: S105 - test accounts only


class Counselor:
    """One signed-in counselor: their own cookie and CSRF token on the shared test client."""

    def __init__(self, hotline: RunningHotline, cookie: str, csrf: str, counselor_id: int) -> None:
        self.client, self.cookie, self.csrf, self.id = hotline.client, cookie, csrf, counselor_id

    async def get(self, path: str) -> Any:
        response = await self.client.get(path, headers={"Cookie": f"hotline_console={self.cookie}"})
        return response

    async def post(self, path: str, body: object = None) -> tuple[int, Any]:
        response = await self.client.post(
            path,
            data=json.dumps(body if body is not None else {}),
            headers={
                "Cookie": f"hotline_console={self.cookie}",
                "X-CSRF-Token": self.csrf,
                "Content-Type": "application/json",
            },
        )
        return response.status, await response.json()

    async def form(self, path: str, **fields: str) -> Any:
        return await self.client.post(
            path,
            data={"csrf": self.csrf, **fields},
            headers={"Cookie": f"hotline_console={self.cookie}"},
            allow_redirects=False,
        )


async def sign_in(hotline: RunningHotline, username: str, role: Role = Role.COUNSELOR) -> Counselor:
    added = await hotline.client.app[counselors_key].add(
        username, PASSWORD, role, must_change_password=False
    )
    assert added.id is not None
    hotline.client.session.cookie_jar.clear()
    response = await hotline.client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303
    cookie = response.cookies["hotline_console"].value
    hotline.client.session.cookie_jar.clear()
    page = await hotline.client.get("/console", headers={"Cookie": f"hotline_console={cookie}"})
    return Counselor(hotline, cookie, csrf_of(await page.text()), added.id)


async def add_case(
    hotline: RunningHotline, priority: int, waited: timedelta, category: str = "deepfake"
) -> str:
    """A sealed case in the queue that has waited `waited` already."""
    app = hotline.client.app
    active = await app[keyring_key].active()
    assert active is not None
    case_id = secrets.token_hex(16)
    header = RoutingHeader(
        case_id, priority, "en", "web", category, active.key_id, utcnow().isoformat()
    )
    envelope = seal(b'{"answers": {}}', header, active.public_key)
    cases = app[cases_key]
    assert await cases.store_sealed(case_id, envelope)
    async with app[engine_key].begin() as conn:
        await conn.execute(
            update(Case).where(col(Case.id) == case_id).values(received_at=utcnow() - waited)
        )
    return case_id


async def audit_trail(hotline: RunningHotline, subject: str) -> list[tuple[str, str, str]]:
    async with hotline.client.app[engine_key].connect() as conn:
        rows = await conn.execute(
            select(col(AuditEntry.actor), col(AuditEntry.action), col(AuditEntry.detail))
            .where(col(AuditEntry.subject) == subject)
            .order_by(col(AuditEntry.seq))
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_the_queue_orders_by_priority_then_wait_and_shows_the_sla(
    hotline: RunningHotline,
) -> None:
    # Default targets: priority 3: 2 min, 2: 5 min, 1: 15 min, 0: 60 min; "due" from 75 %.
    calm = await add_case(hotline, 0, timedelta(minutes=1))
    late = await add_case(hotline, 1, timedelta(minutes=20))
    newer = await add_case(hotline, 1, timedelta(minutes=2))
    urgent = await add_case(hotline, 2, timedelta(minutes=4))
    counselor = await sign_in(hotline, "kim")
    queue = await (await counselor.get("/api/queue")).json()
    assert [c["id"] for c in queue["cases"]] == [urgent, late, newer, calm]
    assert [c["sla"] for c in queue["cases"]] == ["due", "missed", "ok", "ok"]
    first = queue["cases"][0]
    assert (first["sla_s"], first["warning_s"]) == (300, 225)
    assert 240 <= first["waiting_s"] < 260
    assert set(first) >= {"priority", "category", "language", "channel", "received_at"}
    page = await (await counselor.get("/console")).text()
    assert f'class="priority-1 sla-missed" data-case="{late}"' in page
    assert "SLA missed" in page and "SLA due soon" in page, "the state is said in words"
    assert '<script src="/console/static/queue.js"></script>' in page
    script = await hotline.client.get("/console/static/queue.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    source = await script.text()
    assert "/api/queue" in source and "innerHTML" not in source


def test_sla_states_and_settings() -> None:
    policy = SlaPolicy()
    assert [sla_state(s, 300, 225) for s in (0, 224, 225, 299, 300)] == [
        "ok",
        "ok",
        "due",
        "due",
        "missed",
    ]
    settings = Settings.from_env({"HOTLINE_SLA_MINUTES": "3:1, 2:3,1:10,0:30"})
    assert settings.sla.target_s(3) == 60 and settings.sla.target_s(0) == 1800
    assert policy.warning_s(1) == 15 * 60 * 75 // 100
    for bad, said in (
        ("3:2,2:5,1:15", "no target for priority 0"),
        ("3:2,3:5,1:15,0:60", "priority 3 is given twice"),
        ("urgent:2", "is not priority:minutes"),
        ("3:0,2:5,1:15,0:60", "is not priority:minutes"),
    ):
        with pytest.raises(SettingsError, match=f"^HOTLINE_SLA_MINUTES: .*{said}"):
            Settings.from_env({"HOTLINE_SLA_MINUTES": bad})


async def test_two_counselors_claiming_at_once_one_wins(hotline: RunningHotline) -> None:
    kim, lee = await sign_in(hotline, "kim"), await sign_in(hotline, "lee")
    for _ in range(4):
        case_id = await add_case(hotline, 1, timedelta(0))
        path = f"/api/cases/{case_id}/claim"
        results = await asyncio.gather(kim.post(path), lee.post(path))
        assert sorted(status for status, _body in results) == [200, 409]
        (_, won), (_, lost) = sorted(results, key=lambda r: r[0])
        assert lost == {"error": CLAIM_LOST}
        case = await hotline.client.app[cases_key].get(case_id)
        assert (case.status, case.claimed_by) == ("claimed", won["claimed_by"])
        claims = [e for e in await audit_trail(hotline, case_id) if e[1] == "claim"]
        assert claims == [(f"counselor:{won['claimed_by']}", "claim", "to claimed")]


async def test_the_loser_of_a_claim_form_is_told_another_counselor_took_it(
    hotline: RunningHotline,
) -> None:
    kim, lee = await sign_in(hotline, "kim"), await sign_in(hotline, "lee")
    case_id = await add_case(hotline, 1, timedelta(0))
    won = await kim.form(f"/console/cases/{case_id}/claim")
    assert won.status == 303
    lost = await lee.form(f"/console/cases/{case_id}/claim")
    assert lost.status == 409
    assert "Another counselor took this case" in await lost.text()
    page = await (await kim.get(f"/console/cases/{case_id}")).text()
    assert "You hold this case" in page


async def test_a_json_change_needs_the_csrf_header(hotline: RunningHotline) -> None:
    kim = await sign_in(hotline, "kim")
    case_id = await add_case(hotline, 1, timedelta(0))
    kim.csrf = "not the token"
    status, body = await kim.post(f"/api/cases/{case_id}/claim")
    assert status == 403 and "CSRF" in body["error"]
    assert (await hotline.client.app[cases_key].get(case_id)).status == "queued"


async def test_a_release_puts_the_handoff_back_in_its_place(
    hotline: RunningHotline, redis: Redis
) -> None:
    await ShiftBoard(redis).start(1)
    for token in ("a" * 43, "b" * 43):  # two victims (one asking twice would be one case)
        for text in ("/start", "/human"):
            turn = {"token": token, "text": text, "language": "en"}
            assert (await hotline.client.post("/chat/api/turn", json=turn)).status == 200
    scored = await redis.zrange(streams.HANDOFF_QUEUE, 0, -1, withscores=True)
    before = dict(cast(list[tuple[bytes, float]], scored))
    assert len(before) == 2
    kim, lee = await sign_in(hotline, "kim"), await sign_in(hotline, "lee")
    boss = await sign_in(hotline, "boss", Role.SUPERVISOR)
    for _ in range(250):
        waiting = (await (await kim.get("/api/queue")).json())["cases"]
        if len(waiting) == 2:
            break
        await asyncio.sleep(0.02)
    first = waiting[0]["id"]
    assert first.encode() in before
    assert (await kim.post(f"/api/cases/{first}/claim"))[0] == 200
    assert await redis.zscore(streams.HANDOFF_QUEUE, first) is None
    # Only the holder (or a supervisor) puts a case back.
    status, body = await lee.post(f"/api/cases/{first}/release")
    assert status == 409, body
    assert (await kim.post(f"/api/cases/{first}/release"))[0] == 200
    assert await redis.zscore(streams.HANDOFF_QUEUE, first) == before[first.encode()]
    assert (await (await kim.get("/api/queue")).json())["cases"][0]["id"] == first
    assert (await lee.post(f"/api/cases/{first}/claim"))[0] == 200
    assert (await boss.post(f"/api/cases/{first}/release"))[0] == 200, "a supervisor may"
    assert await redis.zscore(streams.HANDOFF_QUEUE, first) == before[first.encode()]
    actions = [e[:2] for e in await audit_trail(hotline, first)]
    assert actions == [
        (f"counselor:{kim.id}", "claim"),
        (f"counselor:{kim.id}", "release"),
        (f"counselor:{lee.id}", "claim"),
        (f"counselor:{boss.id}", "release"),
    ]


async def test_a_transfer_moves_the_case_to_the_colleagues_cases(hotline: RunningHotline) -> None:
    kim, lee = await sign_in(hotline, "kim"), await sign_in(hotline, "lee")
    boss = await sign_in(hotline, "boss", Role.SUPERVISOR)
    case_id = await add_case(hotline, 1, timedelta(0))
    assert (await kim.post(f"/api/cases/{case_id}/claim"))[0] == 200
    assert (await kim.post(f"/api/cases/{case_id}/transfer", {"to": 9999}))[0] == 400
    assert (await lee.post(f"/api/cases/{case_id}/transfer", {"to": lee.id}))[0] == 409
    status, body = await kim.post(f"/api/cases/{case_id}/transfer", {"to": lee.id})
    assert (status, body) == (200, {"id": case_id, "claimed_by": lee.id})
    mine = await (await lee.get("/console")).text()
    assert f'href="/console/cases/{case_id}"' in mine.split("<h2>My cases</h2>")[1]
    assert (await kim.post(f"/api/cases/{case_id}/transfer", {"to": kim.id}))[0] == 409
    # Started, it can still go to a supervisor, from the form on the transfer page.
    assert (await lee.form(f"/console/cases/{case_id}/status", to="active")).status == 303
    page = await (await lee.get(f"/console/cases/{case_id}/transfer")).text()
    assert f'<option value="{boss.id}">boss (supervisor, off shift)</option>' in page
    moved = await lee.form(f"/console/cases/{case_id}/transfer", to=str(boss.id))
    assert moved.status == 303
    case = await hotline.client.app[cases_key].get(case_id)
    assert (case.status, case.claimed_by) == ("active", boss.id)
    transfers = [e for e in await audit_trail(hotline, case_id) if e[1] == "transfer"]
    assert transfers == [
        (f"counselor:{kim.id}", "transfer", f"from counselor:{kim.id} to counselor:{lee.id}"),
        (f"counselor:{lee.id}", "transfer", f"from counselor:{lee.id} to counselor:{boss.id}"),
    ]
    # Nobody else starts or closes a case someone holds.
    assert (await kim.form(f"/console/cases/{case_id}/close", outcome="referred")).status == 409


async def test_supervisors_see_every_counselors_load_and_the_waits(
    hotline: RunningHotline,
) -> None:
    kim, lee = await sign_in(hotline, "kim"), await sign_in(hotline, "lee")
    boss = await sign_in(hotline, "boss", Role.SUPERVISOR)
    held = [await add_case(hotline, 1, timedelta(0)) for _ in range(2)]
    await add_case(hotline, 2, timedelta(minutes=9))
    await add_case(hotline, 0, timedelta(minutes=3))
    for case_id in held:
        assert (await kim.post(f"/api/cases/{case_id}/claim"))[0] == 200
    assert (await kim.form(f"/console/cases/{held[0]}/status", to="active")).status == 303
    assert (await lee.post("/api/shift", {"on": True}))[1] == {"on_shift": True}
    assert (await (await kim.get("/api/supervision")).json()) == {
        "error": "your role may not do this"
    }
    load = await (await boss.get("/api/supervision")).json()
    by_name = {c["username"]: c for c in load["counselors"]}
    assert (by_name["kim"]["claimed"], by_name["kim"]["active"]) == (1, 1)
    assert {c["id"] for c in by_name["kim"]["cases"]} == set(held)
    assert (by_name["lee"]["on_shift"], by_name["kim"]["on_shift"]) == (True, False)
    assert load["queue"]["waiting"] == 2
    assert 540 <= load["queue"]["longest_wait_s"] < 560
    assert load["queue"]["by_priority"]["2"]["sla_missed"] == 1
    assert load["queue"]["by_priority"]["0"]["sla_missed"] == 0
    page = await (await boss.get("/console/supervision")).text()
    assert "on shift" in page and held[0][:8] in page


async def test_shifts_are_audited_and_lapse_when_the_console_stops_refreshing(
    hotline: RunningHotline, redis: Redis
) -> None:
    kim = await sign_in(hotline, "kim")
    subject = f"counselor:{kim.id}"
    assert (await kim.post("/api/shift", {"on": True}))[1] == {"on_shift": True}
    assert (await (await kim.get("/api/queue")).json())["counselors_on_shift"] == 1
    assert (await kim.post("/api/shift/heartbeat"))[1] == {"on_shift": True, "lapsed": False}
    assert (await kim.post("/api/shift", {"on": "yes"}))[0] == 400
    assert (await kim.post("/api/shift", {"on": False}))[1] == {"on_shift": False}
    assert (await kim.post("/api/shift/heartbeat"))[1] == {"on_shift": False, "lapsed": False}
    assert (await kim.form("/console/shift", on="1")).status == 303
    assert "You are on shift." in await (await kim.get("/console")).text()
    # The laptop was closed: nothing refreshed the presence past its expiry.
    await redis.zadd(streams.SHIFT_PRESENCE, {str(kim.id): 1.0})
    assert (await (await kim.get("/api/queue")).json())["counselors_on_shift"] == 0
    assert (await kim.post("/api/shift/heartbeat"))[1] == {"on_shift": False, "lapsed": True}
    assert (await kim.post("/api/shift/heartbeat"))[1] == {"on_shift": False, "lapsed": False}
    assert await audit_trail(hotline, subject) == [
        (subject, "shift-start", ""),
        (subject, "shift-end", ""),
        (subject, "shift-start", ""),
        (subject, "shift-end", "lapsed: the console stopped refreshing"),
    ]


async def test_every_new_endpoint_is_in_the_authorization_matrix(hotline: RunningHotline) -> None:
    """test_console_access walks every guarded route; these are the queue's, with their rules."""
    routes = {(m, p): a for m, p, a in _guarded_routes(hotline.client.app)}
    case = "no-such-id"  # what _guarded_routes fills every path parameter with
    expected = {
        ("GET", "/console"): Access.COUNSELOR,
        ("GET", "/api/queue"): Access.COUNSELOR,
        ("POST", f"/console/cases/{case}/claim"): Access.COUNSELOR,
        ("POST", f"/console/cases/{case}/release"): Access.COUNSELOR,
        ("GET", f"/console/cases/{case}/transfer"): Access.COUNSELOR,
        ("POST", f"/console/cases/{case}/transfer"): Access.COUNSELOR,
        ("POST", f"/api/cases/{case}/claim"): Access.COUNSELOR,
        ("POST", f"/api/cases/{case}/release"): Access.COUNSELOR,
        ("POST", f"/api/cases/{case}/transfer"): Access.COUNSELOR,
        ("POST", "/console/shift"): Access.COUNSELOR,
        ("POST", "/api/shift"): Access.COUNSELOR,
        ("POST", "/api/shift/heartbeat"): Access.COUNSELOR,
        ("GET", "/console/supervision"): Access.SUPERVISOR,
        ("GET", "/api/supervision"): Access.SUPERVISOR,
        ("GET", "/console/static/queue.js"): Access.PUBLIC,
    }
    assert {k: routes.get(k) for k in expected} == expected


async def test_shift_presence_expires_and_is_not_revived(redis: Redis) -> None:
    now = [1_000.0]
    board = ShiftBoard(redis, ttl_s=60, clock=lambda: now[0])
    assert await board.start(7) is True
    assert await board.start(7) is False
    assert (await board.count(), await board.on_shift()) == (1, {7})
    now[0] += 50
    assert await board.refresh(7) == "on"
    now[0] += 100  # past the refreshed expiry (1,110)
    assert (await board.count(), await board.is_on(7)) == (0, False)
    assert await board.refresh(7) == "lapsed"
    assert await board.refresh(7) == "off"
    assert await board.end(7) is False
    assert await board.start(7) is True
    assert await board.end(7) is True
    assert await redis.zcard(streams.SHIFT_PRESENCE) == 0
