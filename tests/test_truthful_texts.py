"""Issue 18: what the victim reads about people is true at that moment.

"Your report has been received safely. A counselor is looking at it." was said while nobody
was on shift. The received text now says who will read it as it is when it is said.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningHotline
from tests.locales import texts_of
from tests.test_console_queue import sign_in

EN = texts_of("en")


async def _report(hotline: RunningHotline, token: str) -> str:
    said: list[str] = []
    for body in (
        {"text": "/start", "language": "en"},
        {"button": "agree"},
        {"button": "filming"},
        {"button": "18_plus"},
        {"text": "Someone filmed me in a changing room."},
        {"button": "send_now"},
    ):
        response = await hotline.client.post("/chat/api/turn", json={"token": token, **body})
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        said = [m["text"] for m in answer["messages"]]
    return said[0]


async def test_a_report_never_says_a_counselor_is_reading_it_when_nobody_is_on_shift(
    hotline: RunningHotline,
) -> None:
    nobody = await _report(hotline, "n" * 43)
    assert nobody.startswith("Your report has been received safely.")
    assert EN["report.read_no_shift"] in nobody
    assert "looking at it" not in nobody and EN["report.read_on_shift"] not in nobody
    assert "{" not in nobody, "every placeholder filled"

    counselor = await sign_in(hotline, "lee")
    assert (await counselor.post("/api/shift", {"on": True}))[1] == {"on_shift": True}
    someone = await _report(hotline, "s" * 43)
    assert EN["report.read_on_shift"] in someone
    assert EN["report.read_no_shift"] not in someone
