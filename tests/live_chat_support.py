"""What the live chat tests share: a handed-off case as the bot seals it, counselors holding the
centre keys, and a signed-in counselor's cookie and CSRF token."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backend.console.app_keys import cases_key, counselors_key, keyring_key
from backend.console.sessions import COOKIE_NAME
from backend.core import keys
from backend.core.live_chat import REPLY_KEY_ANSWER, encode_reply_key
from backend.core.sealing import RoutingHeader, seal
from backend.models import CaseStatus, Role
from tests.conftest import RunningHotline

PASSWORD = "a live chat test passphrase"  # noqa: S105 - test accounts only


@dataclass(frozen=True)
class SignedIn:
    cookie: str
    csrf: str

    def headers(self, origin: str) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.cookie}", "Origin": origin}

    def api_headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.cookie}", "X-CSRF-Token": self.csrf}


@dataclass(frozen=True)
class Handoff:
    case_id: str
    # The conversation's reply key pair: the bot keeps the private half in the victim's session.
    reply: X25519PrivateKey


async def centre_keys(hotline: RunningHotline) -> dict[str, X25519PrivateKey]:
    return await hotline.client.app[keyring_key].unwrap_with_recovery(hotline.recovery_key)


async def add_counselor(hotline: RunningHotline, username: str, role: Role = Role.COUNSELOR) -> int:
    app = hotline.client.app
    counselor = await app[counselors_key].add(username, PASSWORD, role, must_change_password=False)
    assert counselor.id is not None
    await app[keyring_key].grant(counselor.id, PASSWORD, await centre_keys(hotline))
    return counselor.id


async def sign_in(hotline: RunningHotline, username: str) -> SignedIn:
    client = hotline.client
    client.session.cookie_jar.clear()
    response = await client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    cookie = response.cookies[COOKIE_NAME].value
    page = await (await client.get("/console/password")).text()
    client.session.cookie_jar.clear()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, page
    return SignedIn(cookie, match.group(1))


async def handed_off_case(
    hotline: RunningHotline,
    claimed_by: int | None,
    *,
    with_reply_key: bool = True,
    language: str = "ko",
) -> Handoff:
    """A handoff request sealed to the centre as the bot seals it, stored, and claimed."""
    app = hotline.client.app
    active = await app[keyring_key].active()
    assert active is not None
    reply = keys.generate_private_key()
    answers = {"category": "sextortion"}
    if with_reply_key:
        answers[REPLY_KEY_ANSWER] = encode_reply_key(reply.public_key())
    case_id = uuid.uuid4().hex
    header = RoutingHeader(
        case_id=case_id,
        priority=1,
        language=language,
        channel="telegram",
        category="sextortion",
        key_id=active.key_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    envelope = seal(json.dumps({"answers": answers}).encode(), header, active.public_key)
    cases = app[cases_key]
    assert await cases.store_sealed(f"handoff-{case_id}", envelope)
    if claimed_by is not None:
        await cases.transition(case_id, CaseStatus.CLAIMED, "test", counselor_id=claimed_by)
    return Handoff(case_id, reply)


def origin_of(hotline: RunningHotline) -> str:
    return str(hotline.client.make_url("/")).rstrip("/")
