"""Receipt digests under the deployment's key (issue 14), and codes issued before still working.

The Argon2id digests and reply keys of before are pinned by known answers computed with the
code as it was (`LEGACY_*`): a code a victim wrote down months ago must keep opening her case
and the replies sealed to the key it derived then.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
from pathlib import Path
from typing import cast

import pytest
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.cases import CaseStore
from backend.core import keys, receipt_codes, redis_keys, replies
from backend.core.conversation import Inbound, Pseudonym
from backend.core.errors import SettingsError
from backend.core.pseudonyms import derive_key
from backend.core.receipt_codes import DigestScheme, ReceiptHasher
from backend.core.sealing import Envelope, RoutingHeader, open_envelope, seal
from backend.core.settings import SHIPPED_FLOWS_DIR, Settings
from backend.flows.registry import FlowRegistry
from backend.receipts import ReceiptBook
from bot.cli.node import BACKEND, BOT, Node
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from tests.conftest import FAST_KDF, FAST_KDF_ENV, FIRST_START_ENV, Pair

CODE = "K7QX-3M9D-V2TA-8HPE"
SALT = b"u" * 16
SECRET = b"r" * 32
# Computed by backend/receipts.py and backend/replies.py as they were before issue 14.
LEGACY_DIGEST = "952bca232ff4b85995b9dfbbd149ddc1403130798cfc67d09fe9647cc72bf403"
LEGACY_REPLY_PUBLIC_KEY = "6f409f2d6794daade3884048e5ba46eb6518bb31e48d739a52c8772d63d61631"


def test_the_legacy_scheme_is_the_one_codes_were_issued_under() -> None:
    assert receipt_codes.legacy_digest(CODE.lower(), SALT, FAST_KDF) == LEGACY_DIGEST
    private = replies.legacy_reply_private_key(receipt_codes.normalise(CODE), SALT)
    assert keys.public_bytes(private.public_key()).hex() == LEGACY_REPLY_PUBLIC_KEY


def test_new_digests_are_an_hmac_under_the_deployment_key() -> None:
    digest_key = derive_key(SECRET, "receipt/digest")
    expected = hmac.new(digest_key, receipt_codes.normalise(CODE).encode(), hashlib.sha256)
    assert (
        receipt_codes.keyed_digest(CODE, receipt_codes.ReceiptKeys(SECRET)) == expected.hexdigest()
    )
    other = receipt_codes.ReceiptKeys(b"another deployment's secret....!")
    assert receipt_codes.keyed_digest(CODE, other) != expected.hexdigest(), "keyed, not salted"
    hasher = ReceiptHasher(SECRET, SALT, FAST_KDF)
    new_key = hasher.reply_private_key(CODE, DigestScheme.KEYED)
    old_key = hasher.reply_private_key(CODE, DigestScheme.LEGACY)
    assert new_key is not None and old_key is not None
    assert keys.public_bytes(old_key.public_key()).hex() == LEGACY_REPLY_PUBLIC_KEY
    assert keys.public_bytes(new_key.public_key()) != keys.public_bytes(old_key.public_key())
    assert hasher.digest("not a code") is None and SECRET.hex() not in repr(hasher)


@pytest.fixture
def runtime(redis: Redis, tmp_path: Path) -> tuple[ConversationRuntime, X25519PrivateKey]:
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path / "flows")
    centre = keys.generate_private_key()
    runtime = ConversationRuntime(
        redis,
        FlowRegistry.load(tmp_path / "flows"),
        SessionStore(redis, b"b" * 32, 3600),
        ReportSender(redis, centre.public_key()),
        receipts=ReceiptHasher(SECRET, SALT, FAST_KDF),
        reload_check_s=0,
    )
    return runtime, centre


async def _say(runtime: ConversationRuntime, who: str, text: str = "", button: str = "") -> str:
    inbound = Inbound(
        Pseudonym(who * 64), "web", text=text or None, button=button or None, language="en"
    )
    turn = await runtime.handle(inbound)
    return "\n".join(m.text for m in turn.messages)


async def _entries(redis: Redis) -> list[dict[bytes, bytes]]:
    found = cast(
        list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(redis_keys.REPORTS_STREAM)
    )
    return [fields for _, fields in found]


async def _follow_ups(redis: Redis, centre: X25519PrivateKey) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for fields in await _entries(redis):
        raw = fields.get(redis_keys.FIELD_ENVELOPE.encode())
        if raw is not None:
            envelope = Envelope.from_bytes(raw)
            if envelope.header.category == "follow_up":
                found.append((envelope.header.follows, open_envelope(envelope, centre).decode()))
    return found


async def test_a_code_issued_before_still_opens_its_case_and_its_replies(
    runtime: tuple[ConversationRuntime, X25519PrivateKey], redis: Redis
) -> None:
    bot, centre = runtime
    # What a bot of before issue 14 left in Redis for a code, and a counselor's reply since.
    await redis.set(redis_keys.receipt_key(LEGACY_DIGEST), "case-old")
    old_public = keys.load_public_key(bytes.fromhex(LEGACY_REPLY_PUBLIC_KEY))
    await replies.publish_receipt(redis, "case-old", LEGACY_DIGEST, old_public)
    public = await replies.reply_key(redis, "case-old")
    assert public is not None
    sealed = replies.seal_for_victim("We asked the site to take it down.", public, "case-old")
    await replies.deliver(redis, "case-old", sealed)

    await _say(bot, "a", "/receipt")
    await _say(bot, "a", CODE.lower())
    said = await _say(bot, "a", button="read_replies")
    assert "We asked the site to take it down." in said
    ((follows, opened),) = await _follow_ups(redis, centre)
    assert follows == "case-old" and '"replies_shown": 1' in opened


async def test_a_new_code_is_kept_under_its_keyed_digest_and_found(
    runtime: tuple[ConversationRuntime, X25519PrivateKey], redis: Redis
) -> None:
    bot, centre = runtime
    await _say(bot, "b", "/start")
    await _say(bot, "b", button="agree")
    await _say(bot, "b", button="deepfake")
    await _say(bot, "b", button="18_plus")
    await _say(bot, "b", "Someone posted a fake video.")
    said = await _say(bot, "b", button="send_now")
    code = said.split("receipt code is ")[1].split(".")[0]
    digest = receipt_codes.keyed_digest(code, receipt_codes.ReceiptKeys(SECRET))
    case_id = await redis.get(redis_keys.receipt_key(digest))
    assert isinstance(case_id, bytes)
    event = (await _entries(redis))[-1]
    assert event[redis_keys.FIELD_DIGEST_SCHEME.encode()] == b"hmac-sha256"
    assert event[redis_keys.FIELD_CODE_DIGEST.encode()] == digest.encode()

    await _say(bot, "c", "/receipt")
    await _say(bot, "c", code)
    await _say(bot, "c", button="read_replies")
    ((follows, _),) = await _follow_ups(redis, centre)
    assert follows == case_id.decode()


async def _case(engine: AsyncEngine, case_id: str) -> None:
    header = RoutingHeader(case_id, 0, "ko", "web", "filming", "kid", "2026-11-21T00:00Z")
    public = keys.generate_private_key().public_key()
    await CaseStore(engine).store_many([(f"key-{case_id}", seal(b"{}", header, public))])


def _alembic(conn: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.downgrade(config, revision)


async def test_the_console_finds_old_and_new_codes_after_the_migration(
    engine: AsyncEngine,
) -> None:
    await _case(engine, "case-old")
    await _case(engine, "case-new")
    book = ReceiptBook(engine, FAST_KDF, SECRET)
    salt = await book.salt()
    old_digest = receipt_codes.legacy_digest(CODE, salt, FAST_KDF)
    # The database as it was before migration 0007, with a receipt stored then.
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "0006")
        await conn.execute(
            text("INSERT INTO receipts (digest, case_id, issued_at) VALUES (:d, :c, :t)"),
            {"d": old_digest, "c": "case-old", "t": "2026-01-01 00:00:00"},
        )
    await database.migrate(engine)

    new_code = await book.issue("case-new")
    assert await book.find(CODE.replace("-", " ")) == "case-old"
    assert await book.find(new_code) == "case-new"
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT case_id, digest_scheme FROM receipts"))).all()
    assert sorted((r[0], r[1]) for r in rows) == [
        ("case-new", "hmac-sha256"),
        ("case-old", "argon2id"),
    ]


async def test_intake_keeps_an_old_bots_receipt_as_argon2id(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    settings = _settings(pair, tmp_path / "node", "s" * 32)
    async with Node(settings, frozenset({BACKEND})) as node:
        await node.build()
        await _case_via_stream(redis)
        book = ReceiptBook(engine, FAST_KDF, b"s" * 32)
        digest = receipt_codes.legacy_digest(CODE, await book.salt(), FAST_KDF)
        # A bot of before issue 14 names no digest scheme.
        await redis.xadd(
            redis_keys.REPORTS_STREAM,
            {
                redis_keys.FIELD_IDEMPOTENCY_KEY: "receipt:old",
                redis_keys.FIELD_EVENT: redis_keys.EVENT_RECEIPT_ISSUED,
                redis_keys.FIELD_CASE_IDS: "case-old",
                redis_keys.FIELD_CODE_DIGEST: digest,
            },
        )
        for _ in range(250):
            async with engine.connect() as conn:
                row = (await conn.execute(text("SELECT digest_scheme FROM receipts"))).one_or_none()
            if row is not None:
                break
            await asyncio.sleep(0.02)
        assert row is not None and row[0] == DigestScheme.LEGACY.value
        assert await book.find(CODE) == "case-old"


async def _case_via_stream(redis: Redis) -> None:
    header = RoutingHeader("case-old", 0, "ko", "web", "filming", "kid", "2026-11-21T00:00Z")
    envelope = seal(b"{}", header, keys.generate_private_key().public_key())
    await redis.xadd(
        redis_keys.REPORTS_STREAM,
        {
            redis_keys.FIELD_IDEMPOTENCY_KEY: "report:old",
            redis_keys.FIELD_ENVELOPE: envelope.to_bytes(),
        },
    )


def _settings(pair: Pair, data_dir: Path, secret: str) -> Settings:
    return Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(data_dir),
            "HOTLINE_DATABASE_URL": pair.database_url,
            "HOTLINE_REDIS_URL": pair.redis_url,
            "HOTLINE_RECEIPT_SECRET": secret,
            **FAST_KDF_ENV,
            **FIRST_START_ENV,
        }
    )


async def test_a_node_with_another_receipt_secret_refuses_to_start(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with Node(_settings(pair, tmp_path / "a", "a" * 32), frozenset({BACKEND})) as first:
        await first.build()
    # A bot worker on its own host that was not given the deployment's secret.
    lonely = Node(_settings(pair, tmp_path / "b", "b" * 32), frozenset({BOT}))
    with pytest.raises(SettingsError, match="HOTLINE_RECEIPT_SECRET: differs"):
        async with lonely:
            await lonely.build()
