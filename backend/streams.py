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
# An entry that failed this many times to be stored goes to the dead-letter stream.
INTAKE_MAX_FAILURES: Final = 5
# Failures so far, by entry id (a hash): survives a restart of the consumer that counted.
INTAKE_FAILURES_KEY: Final = PREFIX + "intake:failures"
# Entries that can never be stored (malformed, or failing again and again), kept sealed, with
# the reason, for an administrator; the console shows an alert while it is not empty.
DEAD_LETTER_STREAM: Final = PREFIX + "reports:dead"

# Fields of one entry on REPORTS_STREAM.
FIELD_IDEMPOTENCY_KEY: Final = "idempotency_key"
FIELD_ENVELOPE: Final = "envelope"
# Extra fields of one entry on DEAD_LETTER_STREAM.
FIELD_DEAD_ENTRY_ID: Final = "entry_id"
FIELD_DEAD_REASON: Final = "reason"

# The live chat of a handed-off case (backend/handoff.py): per case, a transcript stream of both
# sides' lines sealed to the centre key plus content-free events; one shared relay outbox the
# bot workers read through a consumer group. Transcripts are trimmed to about this many entries.
CASE_STREAM_PREFIX: Final = PREFIX + "case:"
CASE_STREAM_MAXLEN: Final = 1000
RELAY_OUTBOX_STREAM: Final = PREFIX + "relay:outbox"
RELAY_GROUP: Final = "relay"
# An outbox entry a bot worker took this long ago without acknowledging is taken over.
RELAY_CLAIM_IDLE_MS: Final = 30_000
FIELD_EVENT: Final = "event"
FIELD_BY: Final = "by"
FIELD_AT: Final = "at"
FIELD_REF: Final = "ref"
FIELD_CASE: Final = "case"
FIELD_KIND: Final = "kind"
FIELD_SEALED: Final = "sealed"
# The console's transcript hub (backend/console/hub.py): one blocking XREAD per backend process
# over every watched transcript, plus a wake-up stream of that process's own, so a newly watched
# case joins the read at once instead of after the block runs out. The block stays well below
# redis-py's default socket timeout (5 s), which would otherwise cut every idle read short; a
# crashed process's wake-up stream expires.
CONSOLE_HUB_WAKE_PREFIX: Final = PREFIX + "console:hub:"
CONSOLE_HUB_BLOCK_MS: Final = 1000
CONSOLE_HUB_WAKE_TTL_S: Final = 3600
# Per-stream entries one hub read takes at most; the rest come on the next read.
CONSOLE_HUB_BATCH: Final = 100

# Encrypted, expiring conversation state, keyed by the session-lookup pseudonym.
SESSION_KEY_PREFIX: Final = PREFIX + "session:"
# Per-conversation lock, so updates of one chat are processed in order.
CONVERSATION_LOCK_PREFIX: Final = PREFIX + "lock:"
CONVERSATION_LOCK_TTL_S: Final = 30
CONVERSATION_LOCK_WAIT_S: Final = 10

# Answers to web chat turns, kept briefly so a client's retry after a lost connection gets the
# same answer instead of a second step.
TURN_REPLAY_PREFIX: Final = PREFIX + "turn-replay:"
WEBCHAT_TURN_REPLAY_TTL_S: Final = 300
# Kakao requests carry no id: an identical request body from one user this soon is a duplicate.
KAKAO_DUPLICATE_WINDOW_S: Final = 10
# Receipt codes a victim can come back with, for the bot: the code's slow hash (Argon2id with
# the deployment's receipt salt, `backend.receipts`) -> case id. The code itself is never kept.
RECEIPT_KEY_PREFIX: Final = PREFIX + "receipt:"
RECEIPT_TTL_S: Final = 180 * 86400
# Waiting handoff requests (sorted set: case id by priority, then time), for the queue position
# a victim is told. Entries older than the window are dropped when a new request comes.
HANDOFF_QUEUE: Final = PREFIX + "handoff:queue"
HANDOFF_QUEUE_WINDOW_S: Final = 4 * 3600
# Counts of the closing feedback answers (hash: rating -> count); linked to no case.
FEEDBACK_COUNTS: Final = PREFIX + "feedback:counts"
# Telegram: each update_id is processed once, across restarts and bot workers (SET NX), and
# remembered for a day, longer than Telegram keeps redelivering an unconfirmed update.
TELEGRAM_UPDATE_PREFIX: Final = PREFIX + "telegram:update:"
TELEGRAM_UPDATE_TTL_S: Final = 24 * 3600
# How long a worker holds an update it is handling before another worker may take it over.
TELEGRAM_UPDATE_LEASE_S: Final = 120
# Telegram-only conversation state (reply address, message ids to erase on /exit), encrypted and
# expiring like a session, keyed by the session pseudonym: `<prefix><pseudonym>` holds the chat,
# `<prefix><pseudonym>:messages_list` one encrypted entry per message.
TELEGRAM_CHAT_PREFIX: Final = PREFIX + "telegram:chat:"
TELEGRAM_CHAT_MAX_MESSAGES: Final = 1000

# Counselor console sessions (the private key inside is encrypted under a secret in the cookie).
CONSOLE_SESSION_PREFIX: Final = PREFIX + "console:session:"
CONSOLE_SESSION_TTL_S: Final = 8 * 3600
# A sign-in whose password was right, waiting for its TOTP code: not a session yet, and short.
CONSOLE_PENDING_PREFIX: Final = PREFIX + "console:pending:"
CONSOLE_PENDING_TTL_S: Final = 300
# Failed console sign-ins per (hashed) username, and the lock after too many.
LOGIN_FAILURES_PREFIX: Final = PREFIX + "console:login-failures:"
LOGIN_LOCK_PREFIX: Final = PREFIX + "console:login-lock:"


def session_key(pseudonym: str) -> str:
    return SESSION_KEY_PREFIX + pseudonym


def conversation_lock_key(pseudonym: str) -> str:
    return CONVERSATION_LOCK_PREFIX + pseudonym


def turn_replay_key(digest: str) -> str:
    return TURN_REPLAY_PREFIX + digest


def login_failures_key(username_hash: str) -> str:
    return LOGIN_FAILURES_PREFIX + username_hash


def login_lock_key(username_hash: str) -> str:
    return LOGIN_LOCK_PREFIX + username_hash


def receipt_key(code_digest: str) -> str:
    return RECEIPT_KEY_PREFIX + code_digest


def console_session_key(session_id_hash: str) -> str:
    return CONSOLE_SESSION_PREFIX + session_id_hash


def console_pending_key(session_id_hash: str) -> str:
    return CONSOLE_PENDING_PREFIX + session_id_hash


def case_transcript_stream(case_id: str) -> str:
    return f"{CASE_STREAM_PREFIX}{case_id}:transcript"


def console_hub_wake_stream(hub_id: str) -> str:
    return f"{CONSOLE_HUB_WAKE_PREFIX}{hub_id}:wake"


def telegram_update_key(bot_id: int, update_id: int) -> str:
    return f"{TELEGRAM_UPDATE_PREFIX}{bot_id}:{update_id}"


def telegram_chat_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym


def telegram_messages_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":messages_list"
