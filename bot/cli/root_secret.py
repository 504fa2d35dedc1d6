"""The bot's root secret, from which pseudonym and session keys are derived.

From `HOTLINE_BOT_SECRET` when set (every bot worker of a deployment shares it), otherwise a
random secret created once in the data directory, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets

from backend.core.settings import Settings

FILE_NAME = "bot-secret"


def load_root_secret(settings: Settings) -> bytes:
    if settings.bot_secret is not None:
        return settings.bot_secret
    path = settings.data_dir / FILE_NAME
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    # O_EXCL: two workers starting together must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    return secret
