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
# An event about cases already stored, instead of a report: the entry has FIELD_EVENT (one of
# EVENTS) and FIELD_CASE_IDS (space-separated case ids), besides its idempotency key, and no
# envelope. Content-free: case ids are routing facts every report header carries in clear.
FIELD_EVENT: Final = "event"
FIELD_CASE_IDS: Final = "case_ids"
EVENT_VICTIM_UNREACHABLE: Final = "victim_unreachable"  # the victim blocked the bot
# The bot issued a receipt code for a case: one case id, and FIELD_CODE_DIGEST, the code's
# Argon2id digest (backend/core/receipt_codes.py), which intake stores in the receipts table so the
# console can find a case by a code a victim reads out. The code itself never travels.
EVENT_RECEIPT_ISSUED: Final = "receipt_issued"
FIELD_CODE_DIGEST: Final = "code_digest"
EVENTS: Final = frozenset({EVENT_VICTIM_UNREACHABLE, EVENT_RECEIPT_ISSUED})

# Extra fields of one entry on DEAD_LETTER_STREAM.
FIELD_DEAD_ENTRY_ID: Final = "entry_id"
FIELD_DEAD_REASON: Final = "reason"

# The live chat of a handed-off case (backend/core/live_chat.py): per case, a transcript stream
# of both sides' lines sealed to the centre key plus content-free events; one shared relay
# outbox the bot workers read through a consumer group. Transcripts are trimmed to about this
# many entries.
CASE_STREAM_PREFIX: Final = PREFIX + "case:"
CASE_STREAM_MAXLEN: Final = 1000
RELAY_OUTBOX_STREAM: Final = PREFIX + "relay:outbox"
RELAY_GROUP: Final = "relay"
# An outbox entry a bot worker took this long ago without acknowledging is taken over.
RELAY_CLAIM_IDLE_MS: Final = 30_000
# A transcript event's kind travels in FIELD_EVENT, as a reports-stream event's does.
FIELD_BY: Final = "by"
FIELD_AT: Final = "at"
FIELD_REF: Final = "ref"
FIELD_CASE: Final = "case"
FIELD_KIND: Final = "kind"
FIELD_SEALED: Final = "sealed"
# The bot's relay worker (bot/relay.py): how many outbox entries a read takes, how long it
# blocks, and how often an entry may fail unexpectedly before it is given up (the console is
# told FAILED) instead of being retried for ever. Failures so far by entry id (a hash).
RELAY_BATCH: Final = 100
RELAY_BLOCK_MS: Final = 1000
RELAY_MAX_FAILURES: Final = 5
RELAY_FAILURES_KEY: Final = PREFIX + "relay:failures"
# Case id -> the conversation (session pseudonym, channel) waiting for or chatting with a
# counselor, encrypted and expiring like the session; written at handoff, read by the relay.
RELAY_LINK_PREFIX: Final = PREFIX + "relay:link:"
# Lines a door cannot push (web chat, KakaoTalk) wait here, one encrypted list entry each, per
# conversation, expiring with the session, until the victim's page or next message takes them.
HELD_LINES_PREFIX: Final = PREFIX + "relay:held:"
HELD_LINES_MAX: Final = 200
# Held lines a KakaoTalk callback is POSTing (bot/kakao.py): moved here while the POST is under
# way, removed when Kakao took them, moved back in front of the held ones when it did not. The
# lease says a sender is alive; once it has run out (the sender died mid-POST), the next turn
# takes the lines as held ones again, so a line is never lost, at worst shown twice.
HELD_SENDING_PREFIX: Final = PREFIX + "relay:sending:"
HELD_SENDING_LEASE_PREFIX: Final = PREFIX + "relay:sending-lease:"
HELD_SENDING_LEASE_MS: Final = 30_000
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
# the deployment's receipt salt, `backend.core.receipt_codes`) -> case id. The code itself is
# never kept.
RECEIPT_KEY_PREFIX: Final = PREFIX + "receipt:"
RECEIPT_TTL_S: Final = 180 * 86400
# What the centre needs to answer a receipt's case, set by the bot when it issues the code
# (hash, `case-receipt:<case id>`): the victim's reply public key (derived from the code, see
# backend/core/replies.py) and the code's digest, so erasing the case can cut the code too.
CASE_RECEIPT_PREFIX: Final = PREFIX + "case-receipt:"
FIELD_REPLY_KEY: Final = "reply_key"
FIELD_RECEIPT_DIGEST: Final = "digest"
# Counselors' replies waiting for a returning victim (list, `replies:<case id>`), each sealed
# to the victim's reply key; kept as long as the receipt, at most this many.
CASE_REPLIES_PREFIX: Final = PREFIX + "replies:"
CASE_REPLIES_MAX: Final = 50
# Waiting handoff requests (sorted set: case id by priority, then time), for the queue position
# a victim is told. Entries older than the window are dropped when a new request comes. Written
# only by backend/core/waiting_line.py.
HANDOFF_QUEUE: Final = PREFIX + "handoff:queue"
HANDOFF_QUEUE_WINDOW_S: Final = 4 * 3600
# Score = (HANDOFF_MAX_PRIORITY - priority) * HANDOFF_QUEUE_SLOT + unix time of the request.
HANDOFF_QUEUE_SLOT: Final = 10**10
HANDOFF_MAX_PRIORITY: Final = 3
# A claimed handoff's score, kept while it is claimed, so a release puts it back in its place
# (string; expires with the queue window, after which the request would have aged out anyway).
HANDOFF_TAKEN_PREFIX: Final = PREFIX + "handoff:taken:"
# Counselors on shift (sorted set: counselor id by the unix time their presence expires). An
# open console refreshes it; a closed laptop stops refreshing and drops off after the TTL.
SHIFT_PRESENCE: Final = PREFIX + "shift:presence"
SHIFT_PRESENCE_TTL_S: Final = 120
# How often the open console refreshes it: well inside the TTL, so one lost request is harmless.
SHIFT_HEARTBEAT_S: Final = 30
# Counselors on shift but away (set of counselor ids): still counted on shift for victims, but
# taking no new cases (a colleague cannot transfer one to them) until they come back.
SHIFT_AWAY: Final = PREFIX + "shift:away"
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


# Receipt lookups in the console, counted per counselor (`receipt-lookups:<counselor id>`, a
# counter that expires a window after the last lookup): a signed-in console must not be a
# machine for guessing codes.
RECEIPT_LOOKUPS_PREFIX: Final = PREFIX + "receipt-lookups:"
RECEIPT_LOOKUP_LIMIT: Final = 10
RECEIPT_LOOKUP_WINDOW_S: Final = 600


def receipt_lookups_key(counselor_id: int) -> str:
    return f"{RECEIPT_LOOKUPS_PREFIX}{counselor_id}"


def receipt_key(code_digest: str) -> str:
    return RECEIPT_KEY_PREFIX + code_digest


def case_receipt_key(case_id: str) -> str:
    return CASE_RECEIPT_PREFIX + case_id


def case_replies_key(case_id: str) -> str:
    return CASE_REPLIES_PREFIX + case_id


def console_session_key(session_id_hash: str) -> str:
    return CONSOLE_SESSION_PREFIX + session_id_hash


def console_pending_key(session_id_hash: str) -> str:
    return CONSOLE_PENDING_PREFIX + session_id_hash


def case_transcript_stream(case_id: str) -> str:
    return f"{CASE_STREAM_PREFIX}{case_id}:transcript"


def handoff_taken_key(case_id: str) -> str:
    return HANDOFF_TAKEN_PREFIX + case_id


def relay_link_key(case_id: str) -> str:
    return RELAY_LINK_PREFIX + case_id


def held_lines_key(pseudonym: str) -> str:
    return HELD_LINES_PREFIX + pseudonym


def held_sending_key(pseudonym: str) -> str:
    return HELD_SENDING_PREFIX + pseudonym


def held_sending_lease_key(pseudonym: str) -> str:
    return HELD_SENDING_LEASE_PREFIX + pseudonym


def console_hub_wake_stream(hub_id: str) -> str:
    return f"{CONSOLE_HUB_WAKE_PREFIX}{hub_id}:wake"


def telegram_update_key(bot_id: int, update_id: int) -> str:
    return f"{TELEGRAM_UPDATE_PREFIX}{bot_id}:{update_id}"


def telegram_chat_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym


def telegram_messages_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":messages_list"


def telegram_cases_key(pseudonym: str) -> str:
    """The cases a Telegram conversation opened (one sealed entry each): flagged if the victim
    blocks the bot, also after the session ended."""
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":cases_list"
