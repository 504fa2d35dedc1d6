"""What a counselor reads on a case page (issue 18): words instead of Python values, never the
live chat's reply key, times in the centre's zone with its name, a claim of a case already held
said as such, and the TOTP enrolment's QR code drawn on our own server."""

from __future__ import annotations

import io
import re

import segno
from redis.asyncio import Redis

from backend import totp
from backend.core.shifts import ShiftBoard
from tests.conftest import RunningHotline
from tests.test_console import chat, csrf_of, sign_in_and_change_password, wait_for_cases
from tests.test_console_totp import PASSWORD, secret_of


async def test_the_case_page_speaks_words_in_the_centres_time(
    hotline: RunningHotline, redis: Redis
) -> None:
    await ShiftBoard(redis).start(1)
    await chat(hotline, text="/start", language="en")
    await chat(hotline, text="/human")
    await sign_in_and_change_password(hotline, PASSWORD)
    (case,) = await wait_for_cases(hotline, 1)
    url = f"/console/cases/{case['id']}"
    page = await (await hotline.client.get(url)).text()
    assert "asked for a counselor" in page
    assert "[&#39;" not in page and "['" not in page, "no Python lists"
    assert "reply_key" not in page and "Reply key" not in page
    work = await (await hotline.client.get(f"/api/cases/{case['id']}/work")).json()
    history = re.findall(r"<td>(\d{4}-\d\d-\d\d \d\d:\d\d [A-Z+\d-]+)</td>", page)
    assert history and all(when.endswith(" KST") for when in history), history
    assert work["history"], "the history the page shows in KST"

    form = {"csrf": csrf_of(page)}
    first = await hotline.client.post(f"{url}/claim", data=form, allow_redirects=False)
    assert first.status == 303
    again = await hotline.client.post(f"{url}/claim", data=form, allow_redirects=False)
    assert again.status == 409
    body = await again.text()
    assert "You already hold this case" in body and "Another counselor" not in body
    api = await hotline.client.post(
        f"/api/cases/{case['id']}/claim", headers={"X-CSRF-Token": csrf_of(page)}
    )
    assert (api.status, (await api.json())["error"]) == (409, "you already hold this case")


async def test_the_enrolment_qr_code_is_the_secret_drawn_here(hotline: RunningHotline) -> None:
    await sign_in_and_change_password(hotline, PASSWORD)
    page = await (await hotline.client.get("/console/two-factor")).text()
    assert 'src="/console/two-factor/qr.svg"' in page
    qr = await hotline.client.get("/console/two-factor/qr.svg")
    assert qr.content_type == "image/svg+xml"
    expected = io.BytesIO()
    uri = totp.provisioning_uri(secret_of(page), "admin")
    segno.make(uri, error="m").save(expected, kind="svg", scale=5, border=4, xmldecl=False)
    assert await qr.read() == expected.getvalue()
