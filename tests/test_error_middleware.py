"""Core errors become their HTTP status at one boundary, the error middleware: a handler lets a
`CaseNotFoundError` through and the counselor gets a 404 that says so, as JSON on the API and as
text on a page, whichever route it came from."""

from __future__ import annotations

from tests.conftest import RunningHotline
from tests.test_console_queue import sign_in

NO_SUCH_CASE = "no-such-case-0000"


async def test_an_unknown_case_is_a_404_on_every_kind_of_route(hotline: RunningHotline) -> None:
    counselor = await sign_in(hotline, "nadia")

    page = await counselor.get(f"/console/cases/{NO_SUCH_CASE}")
    assert page.status == 404
    assert await page.text() == "no such case"

    for action in ("claim", "release", "transfer"):
        status, body = await counselor.post(f"/api/cases/{NO_SUCH_CASE}/{action}", {"to": "1"})
        assert (status, body) == (404, {"error": "no such case"}), action

    form = await counselor.form(f"/console/cases/{NO_SUCH_CASE}/claim")
    assert form.status == 404
    assert await form.text() == "no such case"

    status, body = await counselor.post(f"/api/cases/{NO_SUCH_CASE}/close", {"outcome": "x"})
    assert status == 400, "a bad outcome is refused before the case is looked up"
    status, body = await counselor.post(f"/api/cases/{NO_SUCH_CASE}/close", {"outcome": "referred"})
    assert (status, body) == (404, {"error": "no such case"})
