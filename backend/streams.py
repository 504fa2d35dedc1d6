"""Every Redis key and stream name, defined once, with units in the names.

The bot writes, the backend reads; both import these names from here so they cannot drift.
"""

from typing import Final

PREFIX: Final = "hotline:"

# Sealed reports from the bot to the backend's intake (a consumer group).
REPORTS_STREAM: Final = PREFIX + "reports"
INTAKE_GROUP: Final = "intake"
INTAKE_BATCH: Final = 100
INTAKE_BLOCK_MS: Final = 1000
# A pending entry idle this long belongs to a dead consumer and is taken over (XAUTOCLAIM).
INTAKE_CLAIM_IDLE_MS: Final = 30_000

# Fields of one entry on REPORTS_STREAM.
FIELD_IDEMPOTENCY_KEY: Final = "idempotency_key"
FIELD_ENVELOPE: Final = "envelope"

# Encrypted, expiring conversation state, keyed by the session-lookup pseudonym.
SESSION_KEY_PREFIX: Final = PREFIX + "session:"
# Per-conversation lock, so updates of one chat are processed in order.
CONVERSATION_LOCK_PREFIX: Final = PREFIX + "lock:"
CONVERSATION_LOCK_TTL_S: Final = 30
CONVERSATION_LOCK_WAIT_S: Final = 10

# Telegram: each update_id is processed once, across restarts and bot workers (SET NX), and
# remembered for a day, longer than Telegram keeps redelivering an unconfirmed update.
TELEGRAM_UPDATE_PREFIX: Final = PREFIX + "telegram:update:"
TELEGRAM_UPDATE_TTL_S: Final = 24 * 3600
# Telegram-only conversation state (reply address, message ids to erase on /exit), encrypted and
# expiring like a session, keyed by the session pseudonym: `<prefix><pseudonym>` holds the chat,
# `<prefix><pseudonym>:messages_list` one encrypted entry per message.
TELEGRAM_CHAT_PREFIX: Final = PREFIX + "telegram:chat:"
TELEGRAM_CHAT_MAX_MESSAGES: Final = 1000

# Counselor console sessions (the private key inside is encrypted under a secret in the cookie).
CONSOLE_SESSION_PREFIX: Final = PREFIX + "console:session:"
CONSOLE_SESSION_TTL_S: Final = 8 * 3600


def session_key(pseudonym: str) -> str:
    return SESSION_KEY_PREFIX + pseudonym


def conversation_lock_key(pseudonym: str) -> str:
    return CONVERSATION_LOCK_PREFIX + pseudonym


def console_session_key(session_id_hash: str) -> str:
    return CONSOLE_SESSION_PREFIX + session_id_hash


def telegram_update_key(bot_id: int, update_id: int) -> str:
    return f"{TELEGRAM_UPDATE_PREFIX}{bot_id}:{update_id}"


def telegram_chat_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym


def telegram_messages_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":messages_list"
