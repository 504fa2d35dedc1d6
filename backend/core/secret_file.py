"""A secret kept in a file of the data directory: 32 random bytes made on first use, readable by
its owner only, and the same for every process that starts on that directory at once. The bot's
root secret (`bot/cli/root_secret.py`) and the receipt secret (`core/receipt_secret.py`) are
kept so when no setting gives them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    # O_EXCL: two processes starting together must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    return secret
