"""The bot's root secret, from which pseudonym and session keys are derived.

From `HOTLINE_BOT_SECRET` when set (every bot worker of a deployment shares it), otherwise a
random secret created once in the data directory, readable by its owner only.
"""

from __future__ import annotations

from backend.core.secret_file import load_or_create
from backend.core.settings import Settings

FILE_NAME = "bot-secret"


def load_root_secret(settings: Settings) -> bytes:
    if settings.bot_secret is not None:
        return settings.bot_secret
    return load_or_create(settings.data_dir / FILE_NAME)
