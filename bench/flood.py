"""Floods against ordinary victims: do the inbound limits keep the web chat answering?

One run, on this machine, against a real `hotline up` process (SQLite and the embedded Redis,
behind a "proxy" on 127.0.0.1 whose X-Forwarded-For gives every client its own address):
- ordinary: N web chat conversations (default 200), each from its own address, walking the
  report flow's first questions and leaving with /exit, then starting again, one turn every
  1.5-2.5 s (think time), for the whole run;
- the ordinary traffic alone, and the same with two floods at once: one conversation
  (one pseudonym) sending 1,000 messages a minute, and one address opening 50 new conversations
  a second.

Prints the ordinary turns' p50 and p99 latency (the HTTP round trip of a turn) without and with
the floods, their ratio, and how many of each flood's messages were refused (answered with the
calm `safety.slow_down`). Target: the floods are refused beyond their limits (the shipped
defaults: 20 a minute per sender, 120 turns a minute and 10 new conversations a minute per
address), and the ordinary p99 with the floods stays within 2x of the p99 without.

The two conditions alternate in rounds (default 3 rounds of 10 s each way), so both meet the
same background load of a shared machine.

Usage (on the embedded Redis; HOTLINE_BENCH_REDIS_URL runs it on that Redis server instead,
whose db is written to: use a scratch one):
    python bench/flood.py [conversations] [seconds each way] [rounds]
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import yaml

from backend.core.settings import SHIPPED_FLOWS_DIR, InboundLimitPolicy

HOTLINE = str(Path(sys.executable).with_name("hotline"))
_EN = yaml.safe_load((SHIPPED_FLOWS_DIR / "locales" / "en.yaml").read_text())
SLOW_DOWN = _EN["safety"]["slow_down"]
UNAVAILABLE = _EN["common"]["unavailable"]
# One cycle of an ordinary conversation: the report flow's first questions, then the way out.
CYCLE: list[dict[str, str]] = [
    {"text": "/start"},
    {"button": "agree"},
    {"button": "deepfake"},
    {"button": "18_plus"},
    {"text": "Someone is sharing pictures of me."},
    {"text": "/exit"},
]
THINK_S = (1.5, 2.5)
FLOOD_SENDER_PER_MIN = 1000
FLOOD_NEW_PER_S = 50


@dataclass
class Phase:
    """Ordinary turns' latencies while a phase ran."""

    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0


@dataclass
class Flood:
    sent: int = 0
    refused: int = 0  # told calmly to slow down
    answered: int = 0  # a real answer: within the limits
    failed: int = 0  # "unavailable" (e.g. its own turns queued on its conversation) or HTTP

    def count(self, said: list[str]) -> None:
        if said == [SLOW_DOWN]:
            self.refused += 1
        elif said == [UNAVAILABLE]:
            self.failed += 1
        else:
            self.answered += 1


@contextlib.asynccontextmanager
async def hotline_up(directory: Path) -> AsyncIterator[str]:
    """A real `hotline up` behind a trusted "proxy" on 127.0.0.1; its base URL."""
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(directory / "data"),
        "HOTLINE_HTTP_PORT": "0",
        "HOTLINE_TRUSTED_PROXIES": "127.0.0.1",
    }
    for name in ("HOTLINE_DATABASE_URL", "HOTLINE_REDIS_URL", "HOTLINE_TELEGRAM_TOKEN"):
        env.pop(name, None)
    if os.environ.get("HOTLINE_BENCH_REDIS_URL"):
        env["HOTLINE_REDIS_URL"] = os.environ["HOTLINE_BENCH_REDIS_URL"]
    log = (directory / "hotline.log").open("wb")
    # Started once before the measuring begins; nothing else runs on the loop yet.
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own CLI with fixed arguments
        [HOTLINE, "up"], env=env, stdout=subprocess.PIPE, stderr=log
    )
    try:
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        output = ""
        while (found := re.search(r"running on (http://\S+)", output)) is None:
            line = await loop.run_in_executor(None, process.stdout.readline)
            if not line:
                raise RuntimeError("hotline up stopped; see " + str(directory / "hotline.log"))
            output += line.decode()
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def turn(
    http: aiohttp.ClientSession, base: str, token: str, address: str, body: dict[str, str]
) -> list[str]:
    async with http.post(
        base + "/chat/api/turn",
        json={"token": token, "language": "en", **body},
        headers={"X-Forwarded-For": address},
    ) as response:
        response.raise_for_status()
        return [m["text"] for m in (await response.json())["messages"]]


def token() -> str:
    return secrets.token_urlsafe(32)[:43]


async def ordinary(
    http: aiohttp.ClientSession, base: str, number: int, phases: list[Phase], stop: asyncio.Event
) -> None:
    """One victim: her own token and address, a turn every few seconds while the run lasts."""
    address = f"10.{number // 250}.{number % 250}.{1 + number % 200}"
    conversation = token()
    await asyncio.sleep(random.uniform(0, THINK_S[1]))  # noqa: S311 - spreading load, not secrets
    step = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            said = await turn(http, base, conversation, address, CYCLE[step % len(CYCLE)])
        except (aiohttp.ClientError, TimeoutError):
            phases[-1].failed += 1
        else:
            phases[-1].latencies_s.append(time.perf_counter() - started)
            if said == [SLOW_DOWN]:
                phases[-1].failed += 1  # an ordinary victim must never be slowed
        step += 1
        if step % len(CYCLE) == 0:
            conversation = token()  # she left with /exit; a new conversation next time
        await asyncio.sleep(random.uniform(*THINK_S))  # noqa: S311 - think time, not secrets


async def flood_sender(
    http: aiohttp.ClientSession, base: str, flood: Flood, stop: asyncio.Event
) -> None:
    """One pseudonym sending FLOOD_SENDER_PER_MIN messages a minute."""
    conversation = token()
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        try:
            said = await turn(http, base, conversation, "198.51.100.1", {"text": f"spam {n}"})
        except (aiohttp.ClientError, TimeoutError):
            flood.failed += 1
        else:
            flood.count(said)

    await _paced(FLOOD_SENDER_PER_MIN / 60, one, flood, stop, pending)


async def flood_address(
    http: aiohttp.ClientSession, base: str, flood: Flood, stop: asyncio.Event
) -> None:
    """One address opening FLOOD_NEW_PER_S new conversations a second."""
    pending: set[asyncio.Task[None]] = set()

    async def one(_n: int) -> None:
        try:
            said = await turn(http, base, token(), "198.51.100.2", {"text": "/start"})
        except (aiohttp.ClientError, TimeoutError):
            flood.failed += 1
        else:
            flood.count(said)

    await _paced(FLOOD_NEW_PER_S, one, flood, stop, pending)


async def _paced(
    per_s: float,
    one: object,
    flood: Flood,
    stop: asyncio.Event,
    pending: set[asyncio.Task[None]],
) -> None:
    """Start `one(n)` at a steady rate, not waiting for answers (a flood does not wait)."""
    assert callable(one)
    started = time.perf_counter()
    n = 0
    while not stop.is_set():
        await asyncio.sleep(max(0.0, started + n / per_s - time.perf_counter()))
        task = asyncio.ensure_future(one(flood.sent))
        pending.add(task)
        task.add_done_callback(pending.discard)
        flood.sent += 1
        n += 1
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


def _line(name: str, phase: Phase, seconds: float) -> str:
    ms = [v * 1000 for v in phase.latencies_s]
    return (
        f"  {name:<14} {len(ms):>6} turns ({len(ms) / seconds:5.1f}/s), "
        f"p50 {_percentile(ms, 0.5):6.1f} ms, p99 {_percentile(ms, 0.99):6.1f} ms, "
        f"{phase.failed} failed or slowed"
    )


async def _flooding(base: str, commands: Connection) -> None:
    """The attacker, in a process of its own (another machine, in life): floods while told to,
    and reports its counts when told to stop."""
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=400)
    timeout = aiohttp.ClientTimeout(total=30)
    sender, address = Flood(), Flood()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        while (command := await loop.run_in_executor(None, commands.recv)) == "start":
            stop = asyncio.Event()
            floods = [
                asyncio.create_task(flood_sender(http, base, sender, stop)),
                asyncio.create_task(flood_address(http, base, address, stop)),
            ]
            await loop.run_in_executor(None, commands.recv)  # "stop"
            stop.set()
            await asyncio.gather(*floods, return_exceptions=True)
            commands.send("stopped")
        assert command == "report"
        commands.send((sender, address))


def _attacker(base: str, commands: Connection) -> None:
    asyncio.run(_flooding(base, commands))


async def run(conversations: int, seconds: float, rounds: int) -> None:
    """`rounds` times: `seconds / rounds` without the floods, then as long with them, so both
    conditions share whatever else the machine is doing during the run. The floods come from a
    process of their own, so their sending does not delay the ordinary victims' client."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as scratch:
        async with hotline_up(Path(scratch)) as base:
            ours, theirs = multiprocessing.Pipe()
            attacker = multiprocessing.get_context("spawn").Process(
                target=_attacker, args=(base, theirs), daemon=True
            )
            attacker.start()
            connector = aiohttp.TCPConnector(limit=conversations + 50)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                calm, flooded = Phase(), Phase()
                phases = [Phase()]  # the ordinary turns count toward phases[-1]
                stop = asyncio.Event()
                victims = [
                    asyncio.create_task(ordinary(http, base, n, phases, stop))
                    for n in range(conversations)
                ]
                await asyncio.sleep(THINK_S[1] + 1.0)  # every victim has started
                for _ in range(rounds):
                    phases.append(calm)
                    await asyncio.sleep(seconds / rounds)
                    phases.append(flooded)
                    ours.send("start")
                    await asyncio.sleep(seconds / rounds)
                    phases.append(Phase())  # turns in flight as the floods stop: not counted
                    ours.send("stop")
                    await loop.run_in_executor(None, ours.recv)
                ours.send("report")
                sender, address = await loop.run_in_executor(None, ours.recv)
                attacker.join(timeout=30)
                stop.set()
                await asyncio.gather(*victims, return_exceptions=True)
    limits = InboundLimitPolicy()
    print(
        f"ordinary web chat: {conversations} conversations, {seconds:.0f} s without and "
        f"{seconds:.0f} s with the floods, in {rounds} alternating rounds"
    )
    print(_line("without flood", calm, seconds))
    print(_line("with flood", flooded, seconds))
    calm_p99 = _percentile(calm.latencies_s, 0.99)
    ratio = _percentile(flooded.latencies_s, 0.99) / calm_p99 if calm_p99 else float("nan")
    print(f"  p99 with / without flood: {ratio:.2f}x (target: at most 2x)")
    print(
        f"flood, one sender at {FLOOD_SENDER_PER_MIN}/min: {sender.sent} sent, "
        f"{sender.refused} refused, {sender.answered} answered, {sender.failed} failed "
        f"(limit {limits.per_pseudonym} per sender)"
    )
    print(
        f"flood, one address opening {FLOOD_NEW_PER_S}/s: {address.sent} sent, "
        f"{address.refused} refused, {address.answered} answered, {address.failed} failed "
        f"(limits {limits.new_conversations_per_address} new, {limits.per_address} turns "
        f"per address)"
    )


def main() -> int:
    conversations = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    asyncio.run(run(conversations, seconds, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
