"""Evidence files over the Bot API's real HTTP: size limits before fetching, SHA-256 and PDQ in
memory, nothing written to disk."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from PIL import Image
from redis.asyncio import Redis
from telegram import Bot

from backend.core import redis_keys as streams
from backend.core.sealing import Envelope, open_envelope
from backend.flows.registry import FlowRegistry
from bot.telegram.evidence import MAX_SEALED_FILE_BYTES, FileTooLargeError, collect, pdq_hex
from tests import telegram_support
from tests.fake_telegram import ApiCall, FakeTelegram
from tests.telegram_support import (
    TOKEN,
    Victim,
    make_runtime,
    matches,
    reports,
    running_door,
    say,
)

center_key = telegram_support.center_key
door = telegram_support.door
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    server = telegram.server_url
    async with Bot(TOKEN, base_url=f"{server}/bot", base_file_url=f"{server}/file/bot") as bot:
        yield bot


def _picture(seed: int, fmt: str = "PNG", quality: int = 95) -> bytes:
    """A picture with structure (PDQ needs more than flat colour)."""
    image = Image.new("RGB", (256, 256))
    pixels = image.load()
    assert pixels is not None
    for x in range(256):
        for y in range(256):
            pixels[x, y] = ((x * seed) % 256, (y * 3 + seed * 40) % 256, ((x ^ y) * seed) % 256)
    out = io.BytesIO()
    image.save(out, format=fmt, quality=quality)
    return out.getvalue()


def _small_picture(seed: int) -> bytes:
    """A picture under the test door's 1 KB file limit, with the same kind of structure."""
    image = Image.new("RGB", (32, 32))
    pixels = image.load()
    assert pixels is not None
    for x in range(32):
        for y in range(32):
            pixels[x, y] = ((x * seed * 8) % 256, (y * 24 + seed * 40) % 256, (x ^ y) * 8 % 256)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


async def test_a_picture_is_hashed_and_its_bytes_dropped(
    bot: Bot, telegram: FakeTelegram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    content = _picture(3)
    file_id = telegram.add_file(content, folder="photos")
    facts = await collect(
        bot,
        file_id,
        "photo",
        declared_bytes=len(content),
        mime_type=None,
        max_bytes=1 << 20,
        want_pdq=True,
    )
    assert facts.sha256 == hashlib.sha256(content).hexdigest()
    assert facts.size_bytes == len(content)
    assert facts.pdq is not None and len(facts.pdq) == 64
    assert not any(tmp_path.iterdir()), "nothing written to disk"  # noqa: ASYNC240 - tiny

    # PDQ is perceptual: the same picture re-encoded stays close, another one is far.
    recoded = pdq_hex(_picture(3, "JPEG", 60))
    other = pdq_hex(_picture(7))
    assert recoded is not None and other is not None
    assert _distance(facts.pdq, recoded) <= 31 < _distance(facts.pdq, other)


async def test_pdq_only_when_asked_and_only_for_images(bot: Bot, telegram: FakeTelegram) -> None:
    picture = telegram.add_file(_picture(5))
    unasked = await collect(
        bot,
        picture,
        "photo",
        declared_bytes=None,
        mime_type=None,
        max_bytes=1 << 20,
        want_pdq=False,
    )
    assert unasked.pdq is None
    text = telegram.add_file(b"%PDF-1.4 not a picture")
    document = await collect(
        bot,
        text,
        "document",
        declared_bytes=None,
        mime_type="application/pdf",
        max_bytes=1 << 20,
        want_pdq=True,
    )
    assert document.pdq is None
    assert document.sha256 == hashlib.sha256(b"%PDF-1.4 not a picture").hexdigest()


async def test_over_the_limit_nothing_is_fetched(bot: Bot, telegram: FakeTelegram) -> None:
    file_id = telegram.add_file(b"\x01" * 5000)
    with pytest.raises(FileTooLargeError):
        await collect(
            bot,
            file_id,
            "document",
            declared_bytes=5000,
            mime_type=None,
            max_bytes=4096,
            want_pdq=False,
        )
    assert telegram.calls_to("getFile") == [], "refused on the declared size"
    # Undeclared in the message: getFile's size stops it before the download.
    with pytest.raises(FileTooLargeError):
        await collect(
            bot,
            file_id,
            "document",
            declared_bytes=None,
            mime_type=None,
            max_bytes=4096,
            want_pdq=False,
        )
    assert len(telegram.calls_to("getFile")) == 1
    assert telegram.downloads == 0


async def _at_the_evidence_choice(victim: Victim) -> ApiCall:
    await victim.walk(4)  # at the details question
    (when,) = await victim.say("Filmed in a changing room.", replies=1)
    (platform,) = await victim.press(when, "today", replies=1)
    (where,) = await victim.press(platform, "telegram", replies=1)
    (online,) = await victim.press(where, "skip", replies=1)
    *_guide, choice = await victim.press(online, "yes", replies=3)
    assert choice.params["text"] == say("report.evidence_choice")
    return choice


async def _finish(victim: Victim, ask: ApiCall, redis: Redis, key: X25519PrivateKey) -> Any:
    """Done with files, send the report; its sealed body, opened."""
    (refer_center,) = await victim.press(ask, "done", replies=1)
    (refer_police,) = await victim.press(refer_center, "yes", replies=1)
    report, _feedback = await victim.press(refer_police, "no", replies=2)
    assert matches(report.params["text"], "report.received")
    (entry,) = await reports(redis)
    envelope = Envelope.from_bytes(entry[streams.FIELD_ENVELOPE.encode()])
    return json.loads(open_envelope(envelope, key))


async def _nothing_of(content: bytes, file_id: str, redis: Redis) -> None:
    for key in [k async for k in redis.scan_iter()]:
        stored = key + (await redis.dump(key) or b"")
        assert file_id.encode() not in stored
        assert content not in stored


@pytest.mark.usefixtures("door")
async def test_a_photo_at_the_evidence_step_is_sealed_as_hashes_only(
    telegram: FakeTelegram, redis: Redis, center_key: X25519PrivateKey
) -> None:
    """Through the whole door: the victim chose fingerprints only; the sealed report carries
    the photo's SHA-256 and no PDQ, and nothing of the bytes is kept anywhere."""
    victim = Victim(telegram, "en")
    choice = await _at_the_evidence_choice(victim)
    assert telegram.calls_to("getFile") == [], "nothing is fetched before the victim chose"
    (ask_evidence,) = await victim.press(choice, "fingerprints", replies=1)
    assert ask_evidence.params["text"] == say("report.evidence")

    content = _small_picture(3)
    photo, (received,) = await victim.send("photo", content=content, replies=1)
    assert received.params["text"] == say("common.file_received")
    (fetched,) = telegram.calls_to("getFile")
    largest = max(photo["photo"], key=lambda p: p["file_size"])
    assert fetched.params["file_id"] == largest["file_id"]

    body = await _finish(victim, ask_evidence, redis, center_key)
    assert body["answers"]["evidence"] == [f"photo:{hashlib.sha256(content).hexdigest()}"]
    assert "sealed_files" not in body
    await _nothing_of(content, largest["file_id"], redis)


@pytest.mark.usefixtures("door")
async def test_pdq_is_computed_only_when_the_victim_chose_takedown_matching(
    telegram: FakeTelegram, redis: Redis, center_key: X25519PrivateKey
) -> None:
    victim = Victim(telegram, "en")
    choice = await _at_the_evidence_choice(victim)
    (ask,) = await victim.press(choice, "match", replies=1)
    assert ask.params["text"] == say("report.match_images")
    content = _small_picture(5)
    photo, _received = await victim.send("photo", content=content, replies=1)
    # The picture leaves the chat at once (the step says delete_inbound).
    deleted = await telegram.wait_for("deleteMessages", 1)
    assert json.loads(deleted[-1].params["message_ids"]) == [photo["message_id"]]

    body = await _finish(victim, ask, redis, center_key)
    sha256, pdq = hashlib.sha256(content).hexdigest(), pdq_hex(content)
    assert body["answers"]["match_images"] == [f"photo:{sha256}:pdq={pdq}"]
    assert "sealed_files" not in body
    largest = max(photo["photo"], key=lambda p: p["file_size"])
    await _nothing_of(content, largest["file_id"], redis)


@pytest.mark.usefixtures("door")
async def test_a_screenshot_is_kept_sealed_to_the_centre_only_after_consent(
    telegram: FakeTelegram, redis: Redis, center_key: X25519PrivateKey
) -> None:
    victim = Victim(telegram, "en")
    choice = await _at_the_evidence_choice(victim)
    (consent,) = await victim.press(choice, "screenshots", replies=1)
    assert consent.params["text"] == say("report.screenshots_consent")
    assert telegram.calls_to("getFile") == []
    (ask,) = await victim.press(consent, "agree", replies=1)
    content = _small_picture(7)
    photo, _received = await victim.send("photo", content=content, replies=1)
    largest = max(photo["photo"], key=lambda p: p["file_size"])
    # Before the report: in the encrypted session only, and sealed inside it.
    await _nothing_of(content, largest["file_id"], redis)

    body = await _finish(victim, ask, redis, center_key)
    sha256 = hashlib.sha256(content).hexdigest()
    assert body["answers"]["screenshots"] == [f"photo:{sha256}"], "no PDQ: not asked for"
    (sealed,) = body["sealed_files"]
    assert open_envelope(Envelope.from_bytes(base64.b64decode(sealed)), center_key) == content
    await _nothing_of(content, largest["file_id"], redis)


async def test_a_screenshot_over_the_sealed_size_cap_is_refused_calmly(
    mode: str,
    telegram: FakeTelegram,
    redis: Redis,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    limit = 4 * MAX_SEALED_FILE_BYTES  # the door takes it; only the sealed cap refuses it
    async with running_door(mode, redis, telegram, runtime, root_secret, max_file_bytes=limit):
        victim = Victim(telegram, "en")
        choice = await _at_the_evidence_choice(victim)
        (consent,) = await victim.press(choice, "screenshots", replies=1)
        await victim.press(consent, "agree", replies=1)
        content = b"%PDF-1.4 " + b"x" * MAX_SEALED_FILE_BYTES
        _document, (answer,) = await victim.send("document", content=content, replies=1)
        assert answer.params["text"] == say("common.file_too_large")
        assert telegram.downloads == 0, "refused on the declared size"
        await _nothing_of(content[:64], "file-", redis)
