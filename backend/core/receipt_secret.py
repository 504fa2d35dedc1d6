"""The deployment's receipt secret: the key of receipt digests and victims' reply keys.

Both roles need it: the bot digests the codes it issues and derives the reply keys, the backend
digests the codes counselors type. So it cannot be the bot's root secret (the backend must not
be able to make pseudonyms) nor live in the database (a database thief could then test guesses
offline, the very thing the key is for). From `HOTLINE_RECEIPT_SECRET` when set (every bot
worker and backend node of a deployment shares it), otherwise a random secret created once in
the data directory, readable by its owner only, as the bot's root secret (`bot/cli/root_secret.py`);
`hotline up` runs both roles on one data directory, so it needs nothing.
"""

from __future__ import annotations

import hashlib
import hmac

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.errors import SettingsError
from backend.core.pseudonyms import derive_key
from backend.core.secret_file import load_or_create
from backend.core.settings import Settings

FILE_NAME = "receipt-secret"


def load_receipt_secret(settings: Settings) -> bytes:
    if settings.receipt_secret is not None:
        return settings.receipt_secret
    return load_or_create(settings.data_dir / FILE_NAME)


async def check_shared(redis: Redis, secret: bytes) -> None:
    """Refuse to start with another secret than the deployment's first node used.

    A bot on its own data directory without `HOTLINE_RECEIPT_SECRET` would make its own secret
    and issue codes that no backend finds: better one clear line at start than a victim whose
    code "does not exist". The check value is an HMAC under a key of its own, so it gives away
    nothing of the secret.
    """
    check = hmac.new(derive_key(secret, "receipt/check"), b"", hashlib.sha256).hexdigest()
    await redis.set(redis_keys.RECEIPT_SECRET_CHECK, check, nx=True)
    kept = await redis.get(redis_keys.RECEIPT_SECRET_CHECK)
    if isinstance(kept, bytes) and kept.decode() != check:
        raise SettingsError(
            "HOTLINE_RECEIPT_SECRET: differs from the one this deployment's other nodes use; "
            "give every bot worker and backend node the same HOTLINE_RECEIPT_SECRET"
        )
