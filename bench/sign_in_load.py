"""Sign-in load against a victim's web chat: prints figures and a ratio measured in one run;
asserts nothing (issue 18: 32 clients signing in pushed victim latency from 3 ms to 1.6 s).

The composed app (`hotline up`'s backend and bot, embedded SQLite and Redis, the shipped
Argon2id cost) serves a victim who sends web chat turns one after another, first alone, then
while `clients` clients keep signing in with made-up usernames (each check a full Argon2id).
It prints the victim's p50/p99 turn latency both ways and the ratio of the loaded p99 to the
quiet one. Target: under 2x (the hashes run in `HOTLINE_KDF_CONCURRENCY` threads, so they
queue behind each other and not in front of the victim; on 2 shared cores they still take CPU).

Usage: [HOTLINE_KDF_CONCURRENCY=n] python -m bench.sign_in_load [clients] [turns]
(as a module: run as a file, `bench/telegram.py` would shadow the `telegram` package)
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import statistics
import sys
import tempfile
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backend.core.settings import Settings
from bot.cli.node import BACKEND, BOT, Node

TARGET_RATIO = 2.0


async def _turns(client: TestClient[web.Request, web.Application], count: int) -> list[float]:
    token = "b" * 43
    took = []
    for n in range(count):
        started = time.perf_counter()
        text = "/start" if n % 5 == 0 else "hello"
        response = await client.post(
            "/chat/api/turn", json={"token": token, "text": text, "language": "en"}
        )
        await response.read()
        took.append(time.perf_counter() - started)
    return took


def _p(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1] * 1000


async def main(clients: int, turns: int, environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as data:
        # Each sign-in from its own address and username (through the trusted proxy's header),
        # so no throttle answers early: every one is a full password check.
        settings = Settings.from_env(
            {"HOTLINE_DATA_DIR": data, "HOTLINE_TRUSTED_PROXIES": "127.0.0.1", **environ}
        )
        async with Node(settings, frozenset({BACKEND, BOT}), io.StringIO()) as node:
            app = await node.build()
            async with TestClient(TestServer(app)) as client:
                quiet = await _turns(client, turns)
                stop = asyncio.Event()
                checks = 0

                async def sign_in(n: int) -> None:
                    nonlocal checks
                    for i in itertools.count():
                        if stop.is_set():
                            return
                        form = {"username": f"nobody-{n}-{i}", "password": "a made-up password"}
                        address = {"X-Forwarded-For": f"10.{n}.{i // 256 % 256}.{i % 256}"}
                        response = await client.post("/console/login", data=form, headers=address)
                        await response.read()
                        checks += response.status == 401

                load = [asyncio.create_task(sign_in(n)) for n in range(clients)]
                loaded = await _turns(client, turns)
                stop.set()
                await asyncio.gather(*load)
    ratio = _p(loaded, 99) / _p(quiet, 99)
    slots = environ.get("HOTLINE_KDF_CONCURRENCY", "default")
    print(
        f"victim turns, {turns} each way, {clients} clients signing in "
        f"({checks} password checks, KDF concurrency {slots})"
    )
    print(f"  quiet:  p50 {_p(quiet, 50):7.1f} ms  p99 {_p(quiet, 99):7.1f} ms")
    print(f"  loaded: p50 {_p(loaded, 50):7.1f} ms  p99 {_p(loaded, 99):7.1f} ms")
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"  p99 ratio loaded/quiet: {ratio:.2f} (target <= {TARGET_RATIO}) {verdict}")


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 32,
            int(sys.argv[2]) if len(sys.argv) > 2 else 200,
            {k: v for k, v in os.environ.items() if k == "HOTLINE_KDF_CONCURRENCY"},
        )
    )
