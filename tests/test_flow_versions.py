"""Published flow versions in the database, followed by every worker (issue 15).

The defect: a conversation was pinned to its flow version only in one process's memory, so a
second bot worker, or a restart after an edit, answered a victim's next button with the welcome
text and her answers were lost. Here two runtimes share one Redis and one database, as two bot
workers do, and a third stands for the first one restarted.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import audit
from backend.console import canned_responses
from backend.core import keys
from backend.core.bundle_mirror import MirrorReader
from backend.core.conversation import Inbound, Pseudonym
from backend.core.errors import FlowError
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flow_versions import FlowVersionStore, PublishRefusedError
from backend.flows import bundle_files
from backend.models import AuditEntry
from backend.published_flows import PublishedFlows, stop_listening
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import SessionStore
from tests.conftest import FAST_KDF

OLD_AGE = "How old are you? We ask so we can point you to the right help."
NEW_AGE = "How old are you? (We ask only to find the right help for you.)"
ROOT_SECRET = b"r" * 32


@pytest.fixture
def private_key() -> X25519PrivateKey:
    return keys.generate_private_key()


@pytest.fixture
async def store(engine: AsyncEngine, redis: Redis) -> FlowVersionStore:
    store = FlowVersionStore(engine, redis)
    seeded = await store.seed(SHIPPED_FLOWS_DIR, canned_responses.shipped())
    assert seeded is not None and seeded.number == 1
    return store


async def _worker(
    store: FlowVersionStore, redis: Redis, private_key: X25519PrivateKey
) -> ConversationRuntime:
    """One bot worker: its own followed flows, from the shared Redis (never the database)."""
    flows = await PublishedFlows.open(MirrorReader(redis), check_s=0)
    return ConversationRuntime(
        redis,
        flows,
        SessionStore(redis, ROOT_SECRET, 3600),
        ReportSender(redis, private_key.public_key()),
        receipts=ReceiptHasher(b"r" * 32, b"s" * 16, FAST_KDF),
        reload_check_s=0,
    )


async def _click(runtime: ConversationRuntime, who: str, button: str) -> Turn:
    return await runtime.handle(Inbound(Pseudonym(who * 64), "web", button=button, language="en"))


async def _start(runtime: ConversationRuntime, who: str) -> Turn:
    return await runtime.handle(Inbound(Pseudonym(who * 64), "web", text="/start", language="en"))


def _edited(files: dict[str, str]) -> dict[str, str]:
    changed = dict(files)
    assert OLD_AGE in changed["locales/en.yaml"]
    changed["locales/en.yaml"] = changed["locales/en.yaml"].replace(OLD_AGE, NEW_AGE)
    return changed


async def test_a_conversation_stays_on_its_version_on_another_worker_and_after_a_restart(
    store: FlowVersionStore, redis: Redis, private_key: X25519PrivateKey
) -> None:
    first = await _worker(store, redis, private_key)
    await _start(first, "a")
    await _click(first, "a", "agree")
    published = await store.publish(_edited(await store.files(1)), "counselor:1", "kinder words")
    assert published.number == 2
    # A worker that started after the publish has never held version 1 in memory.
    second = await _worker(store, redis, private_key)
    turn = await _click(second, "a", "deepfake")
    assert [m.text for m in turn.messages] == [OLD_AGE], "not the welcome: still version 1"
    await _start(second, "b")
    await _click(second, "b", "agree")
    assert [m.text for m in (await _click(second, "b", "filming")).messages] == [NEW_AGE]
    # The first worker follows the pointer too: a new conversation there starts on version 2.
    await _start(first, "c")
    await _click(first, "c", "agree")
    assert [m.text for m in (await _click(first, "c", "filming")).messages] == [NEW_AGE]
    # A restart: a fresh worker, the session only in Redis; the old version still answers.
    restarted = await _worker(store, redis, private_key)
    await _click(restarted, "a", "18_plus")
    await restarted.handle(
        Inbound(Pseudonym("a" * 64), "web", text="They made fake pictures.", language="en")
    )
    done = await _click(restarted, "a", "send_now")
    assert "received safely" in done.messages[0].text, "the old version finishes"


async def test_a_publish_is_heard_at_once_and_a_rollback_too(
    store: FlowVersionStore, redis: Redis
) -> None:
    flows = await PublishedFlows.open(MirrorReader(redis), check_s=3600)
    listening = asyncio.create_task(flows.listen(redis))
    try:
        for _ in range(200):  # the listener subscribes before it hears anything
            if await redis.pubsub_numsub("hotline:flows:published") != [
                (b"hotline:flows:published", 0)
            ]:
                break
            await asyncio.sleep(0.01)
        v1 = flows.entry().version
        await store.publish(_edited(await store.files(1)), "counselor:1", "kinder words")
        for _ in range(500):
            if flows.entry().version != v1:
                break
            await asyncio.sleep(0.01)
        assert flows.number == 2 and NEW_AGE in flows.files["locales/en.yaml"]
        await store.rollback(1, "counselor:1")
        for _ in range(500):
            if flows.entry().version == v1:
                break
            await asyncio.sleep(0.01)
        assert flows.number == 1
    finally:
        await stop_listening(flows, listening)
    assert [(v.number, v.published) for v in await store.versions()] == [(2, False), (1, True)]


async def test_publish_and_rollback_are_audited(
    store: FlowVersionStore, engine: AsyncEngine
) -> None:
    await store.publish(_edited(await store.files(1)), "counselor:7", "kinder words")
    await store.rollback(1, "counselor:7")
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AuditEntry).order_by(AuditEntry.seq))).all()  # type: ignore[arg-type]  # a model column
    actions = [(r.actor, r.action, r.subject) for r in rows]
    assert actions == [
        ("system:seed", "flows-publish", "flows:1"),
        ("counselor:7", "flows-publish", "flows:2"),
        ("counselor:7", "flows-rollback", "flows:1"),
    ]
    assert (await audit.verify(engine)).intact


async def test_the_same_bundle_again_is_not_a_new_version(store: FlowVersionStore) -> None:
    with pytest.raises(PublishRefusedError, match="identical"):
        await store.publish(await store.files(1), "counselor:1", "again")


def _loop_without_input(files: dict[str, str]) -> dict[str, str]:
    flow = "\n".join(
        [
            "schema: 1",
            "flow: spin",
            "start: one",
            "steps:",
            "  one: {say: common.retry_help, next: two}",
            "  two: {say: common.retry_help, next: one}",
        ]
    )
    return {**files, "spin.flow.yaml": flow + "\n"}


def _yaml_bomb(files: dict[str, str]) -> dict[str, str]:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 9):
        lines.append(f"{chr(97 + n)}: &{chr(97 + n)} [{','.join(['*' + chr(96 + n)] * 9)}]")
    return {**files, "triage.yaml": "\n".join(lines) + "\n"}


HOSTILE = {
    "a YAML bomb": (_yaml_bomb, "anchors and aliases are not allowed"),
    "a huge file": (
        lambda f: {**f, "locales/en.yaml": f["locales/en.yaml"] + "#" * 300_000},
        "over the 262144-byte cap",
    ),
    "a path with ..": (lambda f: {**f, "../outside.flow.yaml": "schema: 1\n"}, "not a bundle file"),
    "an absolute path": (lambda f: {**f, "/etc/report.flow.yaml": "x: 1\n"}, "not a bundle file"),
    "a flow that loops without input": (_loop_without_input, "F009"),
    "broken canned responses": (
        lambda f: {**f, "canned/en.yaml": "- {id: only_here, title: T, text: t}\n"},
        "ids differ",
    ),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
async def test_a_hostile_bundle_is_refused_and_the_published_version_stays(
    store: FlowVersionStore, hostile: str
) -> None:
    make, says = HOSTILE[hostile]
    files = make(await store.files(1))
    with pytest.raises(FlowError) as refused:
        await store.publish(files, "counselor:1", hostile)
    reasons = getattr(refused.value, "reasons", [])
    assert says in " ".join([str(refused.value), *reasons])
    published = await store.published()
    assert published is not None and published.number == 1
    assert [v.number for v in await store.versions()] == [1]


async def test_a_second_seed_changes_nothing(store: FlowVersionStore) -> None:
    assert await store.seed(SHIPPED_FLOWS_DIR) is None
    assert [v.number for v in await store.versions()] == [1]


async def test_a_publish_made_without_redis_reaches_the_workers_through_a_backend(
    store: FlowVersionStore, engine: AsyncEngine, redis: Redis
) -> None:
    """`hotline flows import` on a host without HOTLINE_REDIS_URL writes SQL only; a backend's
    periodic check mirrors it, and a Redis that lost the versions gets them back."""
    worker = await PublishedFlows.open(MirrorReader(redis), check_s=0)
    cli = FlowVersionStore(engine)
    await cli.publish(_edited(await cli.files(1)), "cli:ci", "from CI")
    assert not await worker.follow(), "nothing in Redis yet"
    assert await store.sync_mirror(), "the backend sees the new pointer"
    assert await worker.follow() and worker.number == 2
    await redis.flushdb()
    assert await store.sync_mirror()
    restarted = await PublishedFlows.open(MirrorReader(redis), check_s=0)
    assert restarted.number == 2
    assert await restarted.pinned(worker.entry().version) is not None
    first = bundle_files.digest(await store.files(1))
    assert await restarted.pinned(first) is not None, "older versions are mirrored too"
