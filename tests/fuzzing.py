"""What every fuzz test (`tests/test_fuzz_*.py`) shares: the count of generated inputs, the
Hypothesis settings, what no answer may contain, and a snapshot of what is stored.

Every door is fuzzed on the real app over HTTP. For each generated input: no unhandled
exception, no 5xx (but a declared 503), no traceback or internal path in the body, and for an
input the door refuses, nothing stored changes. The count of inputs, per door, is printed at
the end of the run (`tests/conftest.py: pytest_terminal_summary`), also under pytest-xdist.
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import backend
from backend.core import redis_keys
from backend.embedded_redis import EmbeddedRedis
from tests.conftest import Pair

# A fuzz test runs its inputs in one test. The suite's 2 minutes are a target the run prints
# (its inputs and seconds per door), not a timeout: on a loaded machine one test alone took
# 131 s, and a timeout there fails a run that found nothing. This only stops a hang.
FUZZ_TIMEOUT_S = 360
# Generated inputs per door in this process, and the seconds spent generating and sending them.
COUNTS: Counter[str] = Counter()
SECONDS: dict[str, float] = {}
# Keys written by background work, not by a request: intake consumes and deletes reports, the
# relay reads its outbox, the transcript archiver drains its stream into SQL, the Telegram outbox
# fills its shared rate windows as earlier replies go out. A refused input is checked against
# everything else.
_BACKGROUND = (
    redis_keys.REPORTS_STREAM.encode(),
    b"hotline:intake",
    b"hotline:relay",
    redis_keys.TRANSCRIPT_ARCHIVE_STREAM.encode(),
    redis_keys.TELEGRAM_RATE_PREFIX.encode(),
    # A chat's record (message ids) is written by the outbox as replies go out, after the
    # webhook answered (issue 12): an earlier accepted update's replies land during later ones.
    redis_keys.TELEGRAM_CHAT_PREFIX.encode(),
)
# Tables written by background work: the transcript archiver drains its stream (above) into
# `transcript_entries` a moment after an accepted line or event, during later inputs.
_BACKGROUND_TABLES = frozenset({"transcript_entries"})
_REPOSITORY = str(Path(backend.__file__).resolve().parent.parent)
_INTERNAL = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\.py\", line|"
    r"site-packages|/usr/lib/python|" + re.escape(_REPOSITORY)
)


@pytest.fixture
def pair(tmp_path: Path, embedded_redis: EmbeddedRedis) -> Pair:
    """The fuzz runs on the embedded pair only: it tests what the doors do with any input, the
    storage contract suites run on both pairs, and twice the inputs would not fit the fuzz
    suite's two minutes. A fuzz module imports this to override `tests/conftest.py`'s `pair`."""
    return Pair("embedded", f"sqlite:///{tmp_path / 'test.sqlite3'}", embedded_redis.url)


def payload(body: bytes) -> io.BytesIO:
    """A body as aiohttp's client wants a large one (raw bytes warn, and warnings fail)."""
    return io.BytesIO(body)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis for the fuzz tests: a fixed number of inputs, no deadline (the machine is
    shared), and the app built once per test, not per input (a function-scoped fixture)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


@contextmanager
def counted(door: str) -> Iterator[None]:
    """One generated input at `door`: counted, and its time added to the door's."""
    started = time.perf_counter()
    try:
        yield
    finally:
        COUNTS[door] += 1
        SECONDS[door] = SECONDS.get(door, 0.0) + time.perf_counter() - started


def assert_sane_answer(status: int, body: bytes, *, allowed_503: bool = False) -> None:
    """No server error (but a declared 503) and nothing of our insides in the body."""
    assert status < 500 or (allowed_503 and status == 503), (status, body[:300])
    shown = body.decode("utf-8", errors="replace")
    found = _INTERNAL.search(shown)
    assert found is None, f"internal detail in an answer: {found.group(0)!r}"


# JSON of any shape: what a client may send instead of what a door expects.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


class Blob(bytes):
    """A large body, shown short when Hypothesis reports a failing input."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes: {bytes(self[:32])!r}...)"


# Bytes that are not JSON at all, of any size up to past the app's 1 MiB request limit.
raw_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.builds(
        lambda n, b: Blob(b * n),
        st.sampled_from([1000, 65_537, 1_048_577, 1_100_000]) | st.integers(1, 1_100_000),
        st.binary(min_size=1, max_size=2),
    ),
)


# A Telegram chat's record (its message ids) is written by the outbox after the webhook has
# answered (issue 12 answers once the turn has stepped), so an earlier, accepted update's
# replies may still be landing in it during the next input; and the turn's kept replies
# (`bot.telegram.outgoing`) are deleted once those went out. A refused input may not create
# one; a record that existed before may change.
_SETTLING = (
    redis_keys.TELEGRAM_CHAT_PREFIX.encode(),
    redis_keys.TELEGRAM_OUTGOING_PREFIX.encode(),
)

# A key this close to its expiry may be gone after the next input for no fault of it (Kakao's
# duplicate window is 10 s).
_EXPIRING_MS = 15_000


@dataclass(frozen=True)
class Snapshot:
    """Every key a request may write with its value (not its TTL); which of them expire soon;
    and, where asked, every row of the database."""

    redis: dict[bytes, object]
    expiring: frozenset[bytes]
    rows: dict[str, list[str]] | None = None

    def changes_since(self, before: Snapshot) -> list[str]:
        # Gone, or gone between the listing and the read (None, or an empty hash or list).
        expired = {k for k in before.expiring if not self.redis.get(k)}
        settling = {k for k in before.redis if k.startswith(_SETTLING)}
        keys = (before.redis.keys() | self.redis.keys()) - expired - settling
        changed = sorted(
            f"{k!r}: {str(before.redis.get(k))[:40]} -> {str(self.redis.get(k))[:40]}"
            for k in keys
            if before.redis.get(k) != self.redis.get(k)
        )
        if before.rows is not None and self.rows is not None:
            tables = before.rows.keys() | self.rows.keys()
            changed += sorted(t for t in tables if before.rows.get(t) != self.rows.get(t))
        return changed


class StoredState:
    """Whether an input the door refused changed what is stored (Redis, and the database when
    given). The state after one input is the state before the next, so an input costs one
    snapshot, taken after it only when it was refused (and before it, when the last was not)."""

    def __init__(self, redis: Redis, engine: AsyncEngine | None = None) -> None:
        self._redis = redis
        self._engine = engine
        self._known: Snapshot | None = None

    async def _snapshot(self) -> Snapshot:
        values, expiring = await redis_state(self._redis)
        rows = None if self._engine is None else await database_state(self._engine)
        return Snapshot(values, expiring, rows)

    async def before(self) -> Snapshot:
        if self._known is None:
            self._known = await self._snapshot()
        return self._known

    async def after(self, before: Snapshot, *, refused: bool) -> None:
        if not refused:
            self._known = None
            return
        now = await self._snapshot()
        self._known = now
        changed = now.changes_since(before)
        assert not changed, f"a refused input changed what is stored: {changed}"


def _raw(value: object) -> bytes:
    assert isinstance(value, bytes)  # the client runs without decode_responses
    return value


async def redis_state(redis: Redis) -> tuple[dict[bytes, object], frozenset[bytes]]:
    """Every key a request may write and its value, and the keys about to expire."""
    keys = sorted(_raw(k) for k in await redis.keys("*") if not _raw(k).startswith(_BACKGROUND))
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
            pipe.pttl(key)
        answers = await pipe.execute()
    # A key that expired between KEYS and TYPE is "none": left out, as if listed a moment later.
    kept = [
        (k, kind.decode(), ttl)
        for k, kind, ttl in zip(keys, answers[0::2], answers[1::2], strict=True)
        if kind != b"none"
    ]
    keys = [k for k, _, _ in kept]
    ttls = [ttl for _, _, ttl in kept]
    async with redis.pipeline(transaction=False) as pipe:
        for key, name, _ttl in kept:
            if name == "string":
                pipe.get(key)
            elif name == "hash":
                pipe.hgetall(key)
            elif name == "list":
                pipe.lrange(key, 0, -1)
            elif name == "set":
                pipe.smembers(key)
            elif name == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            elif name == "stream":
                pipe.xrange(key)
            else:
                pipe.type(key)  # a type no door writes: compared by its name
        values = await pipe.execute()
    expiring = frozenset(k for k, ttl in zip(keys, ttls, strict=True) if 0 <= ttl <= _EXPIRING_MS)
    return dict(zip(keys, values, strict=True)), expiring


async def database_state(engine: AsyncEngine) -> dict[str, list[Any]]:
    """Every row of every table a request may write."""
    state: dict[str, list[Any]] = {}
    async with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in _BACKGROUND_TABLES:
                continue
            rows = await conn.execute(text(f"SELECT * FROM {table.name}"))  # noqa: S608 - our own table names
            state[table.name] = sorted(map(repr, rows.all()))
    return state
