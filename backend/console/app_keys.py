"""The console's application state, as typed aiohttp keys: set once by `views.add_routes`,
read by every console module (so none of them imports another's routes to reach it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from backend.cases import CaseStore
from backend.console.sessions import ConsoleSessionStore
from backend.counselors import CounselorStore
from backend.keyring import KeyRing
from backend.login_guard import LoginGuard

cases_key = web.AppKey("console_cases", CaseStore)
counselors_key = web.AppKey("console_counselors", CounselorStore)
keyring_key = web.AppKey("console_keyring", KeyRing)
login_guard_key = web.AppKey("console_login_guard", LoginGuard)
pending_key = web.AppKey("console_pending_sign_ins", ConsoleSessionStore)
require_totp_key = web.AppKey("console_require_totp", bool)
# The centre's IANA time zone: every time a page shows is in it, with its name.
time_zone_key = web.AppKey("console_time_zone", str)
DeadLetterCount = Callable[[], Awaitable[int]]
dead_letters_key: web.AppKey[DeadLetterCount] = web.AppKey("console_dead_letters")
