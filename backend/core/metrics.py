"""What a node counts and times, for Prometheus: counts and latencies only, never who or what.

One `Metrics` per node, on that node's own `CollectorRegistry` (no process-wide default
registry: two nodes in one test process must not share counters), handed down through
constructors. Instrumented code calls one typed method per event, so the label values are
chosen here, from small fixed sets.

WARNING: no label or value may carry a pseudonym, case id, receipt, text, platform id or
address. Labels are a channel name from `CHANNELS`, a priority 0-3, or an outcome word from a
fixed set; anything else is folded into "other". `tests/test_metrics.py` runs a canary
conversation and checks the scraped text.

The centre's gauges (queue, SLA, intake, dead letters, shifts) are read from Redis and SQL
when Prometheus scrapes, by `backend.centre_gauges`, on backend nodes only: a bot worker does
not export a "0 counselors on shift" it knows nothing about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# The doors' channel names (bot/webchat.py, bot/telegram.py, bot/kakao.py).
CHANNELS = frozenset({"web", "telegram", "kakao"})
TURN_OUTCOMES = frozenset({"answered", "unavailable", "refused"})
SEND_RESULTS = frozenset({"sent", "blocked", "failed"})
RETRY_REASONS = frozenset({"rate_limited", "network"})
DELIVERY_OUTCOMES = frozenset({"delivered", "held", "failed"})
OTHER = "other"

# A turn is a lock, a session read and write and a step: milliseconds, seconds when sealing.
TURN_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The pure flow step alone: well under a millisecond, unless something is wrong.
STEP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
# A counselor's line to the victim's door: the target is under 10 ms; a held line waits longer.
DELIVERY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0)

Refresher = Callable[[], Awaitable[None]]


def _one_of(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


class Metrics:
    """The event instruments of one node (bot and backend roles alike)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._updates = Counter(
            "hotline_updates", "Inputs a door received from a platform", ["channel"], registry=r
        )
        self._turns = Counter(
            "hotline_turns",
            "Conversation turns by channel and outcome (unavailable: a dependency failed)",
            ["channel", "outcome"],
            registry=r,
        )
        self._turn_seconds = Histogram(
            "hotline_turn_seconds",
            "One conversation turn: lock, session, flow step, effects, save",
            ["channel"],
            buckets=TURN_BUCKETS_S,
            registry=r,
        )
        self._step_seconds = Histogram(
            "hotline_flow_step_seconds",
            "The pure flow step of a turn",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self._sends = Counter(
            "hotline_outbox_sends",
            "Telegram sends by result (sent, blocked by the victim, failed after every retry)",
            ["result"],
            registry=r,
        )
        self._rate_limited = Counter(
            "hotline_outbox_rate_limited", "Telegram 429 answers (retry_after)", registry=r
        )
        self._retries = Counter(
            "hotline_outbox_retries", "Telegram sends retried, by reason", ["reason"], registry=r
        )
        self._delivery_seconds = Histogram(
            "hotline_live_delivery_seconds",
            "A counselor's line from the console's outbox to the victim's door",
            ["outcome"],
            buckets=DELIVERY_BUCKETS_S,
            registry=r,
        )
        for channel in CHANNELS:  # present from the start, so rate() has a first point
            self._updates.labels(channel)
            self._turns.labels(channel, "answered")

    def update(self, channel: str) -> None:
        self._updates.labels(_one_of(channel, CHANNELS)).inc()

    def turn(self, channel: str, outcome: str, seconds: float) -> None:
        channel = _one_of(channel, CHANNELS)
        self._turns.labels(channel, _one_of(outcome, TURN_OUTCOMES)).inc()
        self._turn_seconds.labels(channel).observe(seconds)

    def flow_step(self, seconds: float) -> None:
        self._step_seconds.observe(seconds)

    def send(self, result: str) -> None:
        self._sends.labels(_one_of(result, SEND_RESULTS)).inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def retry(self, reason: str) -> None:
        self._retries.labels(_one_of(reason, RETRY_REASONS)).inc()

    def live_delivery(self, entry_id: str, outcome: str, now_s: float | None = None) -> None:
        """`entry_id`: the outbox entry's stream id, whose first part is when it was written
        (Redis' clock, in ms); only the elapsed time is kept."""
        try:
            written_ms = int(entry_id.split("-", 1)[0])
        except ValueError:
            return
        now = time.time() if now_s is None else now_s
        elapsed = max(0.0, now - written_ms / 1000)
        self._delivery_seconds.labels(_one_of(outcome, DELIVERY_OUTCOMES)).observe(elapsed)


def metrics_app(
    registry: CollectorRegistry, refreshers: Sequence[Refresher] = ()
) -> web.Application:
    """`GET /metrics` on its own port (`HOTLINE_METRICS_PORT`), away from victims' traffic.

    `refreshers` read the sampled gauges first; one that fails is logged and the scrape still
    answers with the rest (a gauge left at its last value beats no metrics in an outage).
    """

    async def scrape(_request: web.Request) -> web.Response:
        for refresh in refreshers:
            try:
                await refresh()
            except Exception as exc:
                log.warning("metrics: a gauge could not be read (%s)", type(exc).__name__)
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
