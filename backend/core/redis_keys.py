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
# An event about a case not stored yet (another backend holds the case's report, not yet
# committed) stays pending and is tried again, with backoff, for this long after intake first
# saw it; only then is it dead-lettered (issue 14). First sightings, by entry id (a hash, in
# Redis' own clock, so every backend measures the same wait).
INTAKE_EVENT_WAIT_MS: Final = 30_000
INTAKE_EVENT_RETRY_MIN_MS: Final = 50
INTAKE_EVENT_RETRY_MAX_MS: Final = 2_000
INTAKE_EVENT_WAITING_KEY: Final = PREFIX + "intake:waiting"

# Fields of one entry on REPORTS_STREAM.
FIELD_IDEMPOTENCY_KEY: Final = "idempotency_key"
FIELD_ENVELOPE: Final = "envelope"
# A handoff request that joins a case the conversation already has (its report, or its earlier
# request): the envelope's case id, in clear like every header's. Intake attaches the request
# to that case instead of storing a new one (issue 18), once the case is stored.
FIELD_JOINS: Final = "joins"
# An event about cases already stored, instead of a report: the entry has FIELD_EVENT (one of
# EVENTS) and FIELD_CASE_IDS (space-separated case ids), besides its idempotency key, and no
# envelope. Content-free: case ids are routing facts every report header carries in clear.
FIELD_EVENT: Final = "event"
FIELD_CASE_IDS: Final = "case_ids"
EVENT_VICTIM_UNREACHABLE: Final = "victim_unreachable"  # the victim blocked the bot
# The bot issued a receipt code for a case: one case id, and FIELD_CODE_DIGEST, the code's
# digest (backend/core/receipt_codes.py) made as FIELD_DIGEST_SCHEME says (absent: Argon2id,
# from a bot of before issue 14), which intake stores in the receipts table so the console can
# find a case by a code a victim reads out. The code itself never travels.
EVENT_RECEIPT_ISSUED: Final = "receipt_issued"
FIELD_CODE_DIGEST: Final = "code_digest"
FIELD_DIGEST_SCHEME: Final = "digest_scheme"
# Triage read danger in a victim's later words (waiting, in a live chat, after a report): the
# cases' priority rises to FIELD_PRIORITY (0-3; never lowered), so the console's queue reorders.
EVENT_PRIORITY_RAISED: Final = "priority_raised"
FIELD_PRIORITY: Final = "priority"
# A returning victim asked, with her receipt, to erase the case: one case id. Intake marks the
# case (`cases.erase_requested_at`); a supervisor shreds it (or a legal hold keeps it).
EVENT_ERASE_REQUESTED: Final = "erase_requested"
EVENTS: Final = frozenset(
    {EVENT_VICTIM_UNREACHABLE, EVENT_RECEIPT_ISSUED, EVENT_PRIORITY_RAISED, EVENT_ERASE_REQUESTED}
)

# Extra fields of one entry on DEAD_LETTER_STREAM.
FIELD_DEAD_ENTRY_ID: Final = "entry_id"
FIELD_DEAD_REASON: Final = "reason"

# The live chat of a handed-off case (backend/core/live_chat.py): per case, a transcript stream
# of both sides' lines sealed to the centre key plus content-free events; one shared relay
# outbox the bot workers read through a consumer group. Transcripts are trimmed to about this
# many entries.
CASE_STREAM_PREFIX: Final = PREFIX + "case:"
CASE_STREAM_MAXLEN: Final = 1000
# The transcript in Redis is the live buffer only (issue 12): every entry is also put on
# TRANSCRIPT_ARCHIVE_STREAM, which the backend stores in SQL (sealed lines as they are), and
# the buffer expires this long after its last entry.
CASE_TRANSCRIPT_TTL_S: Final = 7 * 24 * 3600
TRANSCRIPT_ARCHIVE_STREAM: Final = PREFIX + "transcripts:archive"
TRANSCRIPT_ARCHIVE_GROUP: Final = "archive"
TRANSCRIPT_ARCHIVE_BATCH: Final = 200
TRANSCRIPT_ARCHIVE_BLOCK_MS: Final = 1000
# An archive entry names its transcript entry: FIELD_CASE and FIELD_ENTRY (the stream id).
FIELD_ENTRY: Final = "entry"
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
# A lease, renewed every third of it while the turn runs (bot/leases.py): a process that died
# mid-turn holds the conversation no longer than this.
CONVERSATION_LOCK_TTL_S: Final = 5
CONVERSATION_LOCK_WAIT_S: Final = 10

# Answers to web chat turns, kept briefly so a client's retry after a lost connection gets the
# same answer instead of a second step.
TURN_REPLAY_PREFIX: Final = PREFIX + "turn-replay:"
WEBCHAT_TURN_REPLAY_TTL_S: Final = 300
# While its turn runs, the marker is a lease naming the running process, renewed every third of
# it: a retry takes over the turn of a process that died within this.
WEBCHAT_TURN_REPLAY_LEASE_MS: Final = 3000
# Kakao requests carry no id: an identical request body from one user this soon is a duplicate.
KAKAO_DUPLICATE_WINDOW_S: Final = 10
# Receipt codes a victim can come back with, for the bot: the code's digest (keyed HMAC, or
# Argon2id for codes of before issue 14, `backend.core.receipt_codes`) -> case id. The code
# itself is never kept.
RECEIPT_KEY_PREFIX: Final = PREFIX + "receipt:"
RECEIPT_TTL_S: Final = 180 * 86400
# A check value of the deployment's receipt secret (string, no expiry), set by the first node
# that starts: a node started with another secret would issue codes nobody else can find, so it
# refuses to start (backend/core/receipt_secret.py).
RECEIPT_SECRET_CHECK: Final = PREFIX + "receipt-secret-check"
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
# A text or button press is claimed with its turn's conversation lock, and its lease renewed with
# the lock's while the turn runs: as short, so a worker killed mid-turn lets it go as fast.
TELEGRAM_UPDATE_TURN_LEASE_S: Final = 5
# The one long poller of a bot (string: its holder, `telegram:poller:<bot id>`): Telegram serves
# getUpdates to one consumer per token, so a second worker refuses to poll while the lease is
# held. Renewed every third of the lease; a dead poller's lease runs out and another may start.
TELEGRAM_POLLER_PREFIX: Final = PREFIX + "telegram:poller:"
TELEGRAM_POLLER_LEASE_S: Final = 30
# Telegram's outbound limits across bot workers (bot/telegram/shared_limits.py), all under this
# prefix and the bot id's hash tag: the bot's moving window (sorted set: slot -> time taken, ms),
# each chat's (keyed by its rate-limit pseudonym), the sends waiting for a slot by priority then
# age (sorted set: ticket -> score) and when each waiter last asked (ticket -> time, ms): a
# waiter silent for TELEGRAM_RATE_WAITER_STALE_MS belonged to a dead worker and is forgotten.
TELEGRAM_RATE_PREFIX: Final = PREFIX + "telegram:rate"
TELEGRAM_RATE_WAITER_STALE_MS: Final = 10_000
# Under Sentinel, how long a report's XADD waits for a replica to have it (WAIT) before the
# turn fails and the victim is asked to send again (bot/reports.py).
REPORT_REPLICA_ACK_MS: Final = 2000
# Telegram-only conversation state (reply address, message ids to erase on /exit), encrypted and
# expiring like a session, keyed by the session pseudonym: `<prefix><pseudonym>` holds the chat,
# `<prefix><pseudonym>:messages_list` one encrypted entry per message.
TELEGRAM_CHAT_PREFIX: Final = PREFIX + "telegram:chat:"
TELEGRAM_CHAT_MAX_MESSAGES: Final = 1000
# A stepped Telegram turn's replies until they went out (bot/telegram/outgoing.py): per chat, a
# hash `<prefix><pseudonym>` (turn -> sealed replies; `<turn>:p` -> sealed progress), and the
# index of every pending turn (sorted set `<prefix>due`: `<pseudonym>:<turn>` -> when its
# sender's lease runs out, ms): a turn due and unsent belonged to a dead worker, and another
# takes it over. The lease is renewed every third of it while the replies go out.
TELEGRAM_OUTGOING_PREFIX: Final = PREFIX + "telegram:outgoing:"
TELEGRAM_OUTGOING_INDEX: Final = TELEGRAM_OUTGOING_PREFIX + "due"
TELEGRAM_OUTGOING_LEASE_S: Final = 15
# A Telegram chat's exit mark (`<prefix><pseudonym>`: the update id of its last quick exit, kept
# TELEGRAM_UPDATE_TTL_S): an update from before it starts nothing (bot/sessions.py: ExitMark).
TELEGRAM_EXIT_PREFIX: Final = PREFIX + "telegram:exited:"

# Counselor console sessions (the private key inside is encrypted under a secret in the cookie).
CONSOLE_SESSION_PREFIX: Final = PREFIX + "console:session:"
# A sign-in whose password was right, waiting for its TOTP code: not a session yet, and short.
CONSOLE_PENDING_PREFIX: Final = PREFIX + "console:pending:"
CONSOLE_PENDING_TTL_S: Final = 300
# Console sign-in attempts (backend/login_guard.py), counted before they are verified: per
# (hashed) username, and per client address as an HMAC under a random key that Redis keeps for
# a day; each counter expires a window after its last attempt and is the lock while at its limit.
LOGIN_FAILURES_PREFIX: Final = PREFIX + "console:login-failures:"
LOGIN_ADDRESS_PREFIX: Final = PREFIX + "console:login-address:"
LOGIN_ADDRESS_KEY: Final = PREFIX + "console:login-address-key"
LOGIN_ADDRESS_KEY_TTL_S: Final = 24 * 3600
# Failures since a counselor's last good sign-in (per hashed username), told at the next one.
LOGIN_TALLY_PREFIX: Final = PREFIX + "console:login-tally:"
LOGIN_TALLY_TTL_S: Final = 30 * 24 * 3600
# Blocks (issue 13; `backend/blocks.py` writes them, `bot/runtime.py` reads the first):
# `blocked:<BLOCKING pseudonym>` -> block id, expiring with the block, so a blocked sender's
# turn costs one EXISTS; `block:<id>` the block's record (case, reason, who, until) for the
# supervisors' list, indexed by expiry in `blocks`.
BLOCKED_PREFIX: Final = PREFIX + "blocked:"
BLOCK_PREFIX: Final = PREFIX + "block:"
BLOCKS_INDEX: Final = PREFIX + "blocks"
BLOCK_DEFAULT_HOURS: Final = 24
BLOCK_MAX_HOURS: Final = 24 * 90


def blocked_key(blocking_pseudonym: str) -> str:
    return BLOCKED_PREFIX + blocking_pseudonym


def block_key(block_id: str) -> str:
    return BLOCK_PREFIX + block_id


# Every session of a counselor (their Redis key names), so a password change can end the others.
CONSOLE_COUNSELOR_SESSIONS_PREFIX: Final = PREFIX + "console:counselor-sessions:"
# Inbound limits (bot/inbound_limits.py): the `limits` library's sliding-window counters, keyed
# under this prefix by the rate-limiting pseudonym or a keyed hash of the client address; each
# counter expires with its window.
INBOUND_LIMITS_PREFIX: Final = PREFIX + "limits"


def session_key(pseudonym: str) -> str:
    return SESSION_KEY_PREFIX + pseudonym


def conversation_lock_key(pseudonym: str) -> str:
    return CONVERSATION_LOCK_PREFIX + pseudonym


def turn_replay_key(digest: str) -> str:
    return TURN_REPLAY_PREFIX + digest


def login_failures_key(username_hash: str) -> str:
    return LOGIN_FAILURES_PREFIX + username_hash


def login_address_key(address_hmac: str) -> str:
    return LOGIN_ADDRESS_PREFIX + address_hmac


def login_tally_key(username_hash: str) -> str:
    return LOGIN_TALLY_PREFIX + username_hash


def console_counselor_sessions_key(counselor_id: int) -> str:
    return f"{CONSOLE_COUNSELOR_SESSIONS_PREFIX}{counselor_id}"


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


def telegram_poller_key(bot_id: int) -> str:
    return f"{TELEGRAM_POLLER_PREFIX}{bot_id}"


def telegram_rate_key(bot_id: int, part: str) -> str:
    """`part`: "bot" (its window), "queue" and "seen" (its waiters), or "chat:<pseudonym>"."""
    return f"{TELEGRAM_RATE_PREFIX}:{{{bot_id}}}:{part}"


def telegram_chat_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym


def telegram_messages_key(pseudonym: str) -> str:
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":messages_list"


def telegram_outgoing_key(pseudonym: str) -> str:
    return TELEGRAM_OUTGOING_PREFIX + pseudonym


def telegram_exit_key(pseudonym: str) -> str:
    return TELEGRAM_EXIT_PREFIX + pseudonym


def telegram_cases_key(pseudonym: str) -> str:
    """The cases a Telegram conversation opened (one sealed entry each): flagged if the victim
    blocks the bot, also after the session ended."""
    return TELEGRAM_CHAT_PREFIX + pseudonym + ":cases_list"


# Published flows (backend/flow_versions.py keeps them in SQL; backend/core/bundle_mirror.py
# mirrors them here, since bot workers never reach the database): a message on this pub/sub
# channel (the new version's digest) tells every bot worker and backend node to follow the
# pointer now; each also looks every FLOWS_CHECK_S, so a lost message only delays a publish.
FLOWS_PUBLISHED_CHANNEL: Final = PREFIX + "flows:published"
FLOWS_CHECK_S: Final = 10.0
# {"digest": ..., "number": ...} of the published version.
FLOWS_POINTER_KEY: Final = PREFIX + "flows:pointer"
# How many of the newest versions a backend keeps mirrored (the ones live conversations may be
# pinned to); a version is immutable, so its key never changes once written.
FLOWS_MIRROR_KEEP: Final = 64


def flows_version_key(digest: str) -> str:
    """A published version's files (JSON), by content digest."""
    return PREFIX + "flows:version:" + digest


# The flows studio's "Try it" panel: one administrator's sandbox conversation with their draft
# (the engine's steps only: nothing is sealed, queued or handed off), kept an hour.
STUDIO_TRY_PREFIX: Final = PREFIX + "studio:try:"
STUDIO_TRY_TTL_S: Final = 3600


def studio_try_key(counselor_id: int) -> str:
    return STUDIO_TRY_PREFIX + str(counselor_id)
