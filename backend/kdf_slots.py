"""Argon2id off the event loop, a bounded number at once (issue 18).

A password check costs tens of megabytes and a good part of a second on purpose. Run on the
event loop, 32 clients signing in with made-up usernames held every victim's chat turn behind
them (3 ms became a 1.6 s median). Here each hash runs in a worker thread (argon2-cffi releases
the GIL while it works) and at most `limit` run at once, so sign-in load queues behind its own
semaphore, never in front of a victim, and cannot take every core or gigabytes of memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class KdfSlots:
    """Share one per process between everything that derives keys from passwords."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._semaphore:
            return await asyncio.to_thread(work, *args, **kwargs)
