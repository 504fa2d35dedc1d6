"""One process at a time on a data directory whose embedded Redis it runs.

A second `hotline up` on the same data directory used to stop the first one's embedded Redis as
"left running by an earlier start", and start its own: the first instance was left broken
(healthz 503) while still serving victims (issue 18). The lock is an `flock` on a file in the
data directory, taken before the embedded Redis starts; the kernel drops it when the process
dies, even by SIGKILL, so a crash never leaves a stale lock behind. The file says which process
holds it, for the message the second one prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from backend.core.errors import SettingsError

LOCK_FILE = "hotline.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock until `release`; SettingsError, naming the holder, when it is taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SettingsError(
                f"HOTLINE_DATA_DIR: {self.path.parent} is in use by another hotline process "
                f"(pid {holder}); stop it first, or give this one another data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
