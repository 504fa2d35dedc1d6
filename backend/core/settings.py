"""One frozen settings object, read once from the environment and passed down through constructors.

Every problem is reported as a `SettingsError` whose message starts with the setting's name, so
the CLI can print one clear line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse_many

from backend.core.errors import SettingsError

SHIPPED_FLOWS_DIR = Path(__file__).resolve().parent.parent.parent / "flows"

DATABASE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "postgresql", "postgres", "postgresql+psycopg"}
REDIS_SCHEMES = {"redis", "rediss", "unix"}
# getFile serves files up to 20 MB; nothing larger can be downloaded through the Bot API.
TELEGRAM_DOWNLOAD_LIMIT_BYTES = 20 * 1024 * 1024
# `HOTLINE_FIRST_START`: what `hotline up` / `backend` do on an empty database. "auto": create the
# centre and print its one-time password and recovery key only when standard output is a
# terminal, otherwise refuse (a container's output lands in a log collector); "print": always
# (a person reading a pipe, the test harness); "refuse": never (`hotline keys init` does it).
FIRST_START_AUTO = "auto"
FIRST_START_PRINT = "print"
FIRST_START_REFUSE = "refuse"
FIRST_START_CHOICES = (FIRST_START_AUTO, FIRST_START_PRINT, FIRST_START_REFUSE)
# Where Kakao i Open Builder's one-time callback URLs point.
KAKAO_CALLBACK_HOSTS = ("bot-api.kakao.com",)
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
# Telegram's own rule for secret_token: 1-256 characters of A-Z, a-z, 0-9, _ and -.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")

# An address block of trusted proxies (backend/forwarded.py believes their headers).
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma- or space-separated addresses and CIDR blocks; ValueError names a bad one."""
    networks = []
    for part in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an address or CIDR block") from None
    return tuple(networks)


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost for passwords and key wrapping: tests run fast, production runs safe."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 1


@dataclass(frozen=True)
class LoginPolicy:
    """How console sign-in resists guessing (growing delays, then a lock per client address,
    and a much higher one per username) and how long a console session lives."""

    max_failures: int = 5  # per client address, within lock_s
    lock_s: int = 900
    delay_ms: int = 250
    # Every counselor must enrol a TOTP authenticator before doing anything else.
    require_totp: bool = False
    username_max_failures: int = 50
    username_lock_s: int = 3600
    # A session ends after this long without a request, and in any case this long after the
    # sign-in (an open console polls every few seconds, so idleness alone never ends it).
    session_idle_s: int = 1800
    session_max_s: int = 8 * 3600


@dataclass(frozen=True)
class InboundLimitPolicy:
    """How much one sender, and one client address, may send to the bot (`bot/inbound_limits.py`).

    Each is a rate in the `limits` library's notation ("20/minute", several joined by ";"), or
    "" for no limit. Many victims share one address (a school, a shelter, a mobile carrier's
    NAT), so the per-address limits sit well above one person's pace. KakaoTalk's requests come
    from Kakao's servers, not from victims, so its per-address limit is a ceiling per Kakao
    server, far higher than the web chat's.
    """

    per_pseudonym: str = "20/minute;200/hour"
    per_address: str = "120/minute"
    per_kakao_address: str = "6000/minute"
    new_conversations_per_address: str = "10/minute;60/hour"


@dataclass(frozen=True)
class KakaoSettings:
    """The KakaoTalk channel's skill server; on when both the bot id and the secret are set."""

    bot_id: str
    secret: str = field(repr=False)
    operator: bool = False  # the channel has Kakao's own human handoff configured
    sync_budget_ms: int = 3500  # answer within Kakao's 5 s; slower steps go by callback
    # In a chat with (or waiting for) a counselor, how long a request with a callback URL is kept
    # open for their next line; Kakao takes a callback for a minute. 0: answer at once.
    callback_wait_ms: int = 45_000
    # The only hosts a request's callbackUrl may name: Kakao's own. Anyone holding the secret
    # could otherwise make the server POST to any address, inside the network too (issue 18).
    callback_hosts: tuple[str, ...] = KAKAO_CALLBACK_HOSTS


@dataclass(frozen=True)
class RedisPool:
    """How many Redis connections a process opens, and how long a request waits for a free one.

    A burst of requests queues for a connection instead of failing at once (issue 18: 300
    parallel web chat turns lost 203 messages to "Too many connections"); what still waits past
    `wait_ms` is answered 503 with Retry-After, and the page sends the same turn again.
    """

    max_connections: int = 100
    wait_ms: int = 5000


@dataclass(frozen=True)
class Retention:
    """How many days a case may sit in each status before it is crypto-shredded; 0 = forever.

    Open cases (new, queued, claimed, active) are kept until someone closes them unless a
    deployment decides otherwise; closed cases go after `closed_days`.
    """

    new_days: int = 0
    queued_days: int = 0
    claimed_days: int = 0
    active_days: int = 0
    closed_days: int = 90
    interval_s: int = 3600

    def by_status(self) -> dict[str, int]:
        """Days by status name, for the statuses that expire at all."""
        days = {
            "new": self.new_days,
            "queued": self.queued_days,
            "claimed": self.claimed_days,
            "active": self.active_days,
            "closed": self.closed_days,
        }
        return {status: n for status, n in days.items() if n > 0}


@dataclass(frozen=True)
class SlaPolicy:
    """How long a waiting case of each priority may wait before a counselor takes it.

    The queue marks a case "due" once `warning_percent` of its target has passed, and "missed"
    after the target, so a counselor sees the risk before it happens.
    """

    minutes_by_priority: tuple[tuple[int, int], ...] = ((3, 2), (2, 5), (1, 15), (0, 60))
    warning_percent: int = 75

    def target_s(self, priority: int) -> int:
        """Seconds a case of `priority` may wait; an unknown priority gets the strictest
        target of those at or below it, and priority 0's target below 0."""
        known = dict(self.minutes_by_priority)
        at_or_below = [p for p in known if p <= priority]
        chosen = max(at_or_below) if at_or_below else min(known)
        return known[chosen] * 60

    def warning_s(self, priority: int) -> int:
        return self.target_s(priority) * self.warning_percent // 100


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str = field(repr=False)
    redis_url: str | None = field(repr=False)
    http_host: str
    http_port: int
    telegram_token: str | None = field(repr=False)
    telegram_base_url: str | None
    telegram_webhook_url: str | None
    # Telegram echoes it in X-Telegram-Bot-Api-Secret-Token on every webhook request.
    telegram_webhook_secret: str | None = field(repr=False)
    # Larger files are refused with a clear message before anything is downloaded.
    telegram_max_file_bytes: int
    flows_dir: Path
    kdf: KdfCost
    # Password hashes (Argon2id) run in threads, at most this many at once: sign-in load must
    # never hold up the event loop that serves victims.
    kdf_concurrency: int
    bot_secret: bytes | None = field(repr=False)
    session_ttl_s: int
    node_name: str
    center_public_key: str | None = None
    receipt_salt: str | None = None
    # Keys receipt digests and reply keys; bot and backend share it (core/receipt_secret.py).
    receipt_secret: bytes | None = field(default=None, repr=False)
    kakao: KakaoSettings | None = None
    login: LoginPolicy = field(default_factory=LoginPolicy)
    retention: Retention = field(default_factory=Retention)
    sla: SlaPolicy = field(default_factory=SlaPolicy)
    # Peers whose Forwarded / X-Forwarded-* headers are believed (backend/forwarded.py).
    trusted_proxies: tuple[Network, ...] = ()
    # The console's language for a counselor who has not chosen one on their browser.
    console_language: str = "ko"
    # Cases (claimed or active) one counselor may hold at once; a claim beyond is refused.
    caseload_cap: int = 5
    # Whether a server start may create the centre and print its secrets (FIRST_START_*).
    first_start: str = "auto"
    # Long polling: how long this worker's claim on the bot's one poller lasts unrenewed.
    telegram_poll_lease_s: int = 30
    # How long a stepped turn's pending replies stay a worker's unrenewed, before another
    # worker sends them (the first died after the step).
    telegram_outgoing_lease_s: int = 15
    # Webhook: how many connections Telegram opens at once to deliver updates (setWebhook's
    # max_connections, 1-100; Telegram's default is 40). A surge needs every one of them.
    telegram_webhook_max_connections: int = 100
    # Telegram's pace: messages a second to one chat, and from the bot to all chats.
    telegram_chat_messages_per_s: int = 1
    telegram_bot_messages_per_s: int = 30
    # How long a stream consumer (intake, transcript archive, relay) waits in one blocking
    # read; also how long stopping the node may wait for one to notice.
    stream_block_ms: int = 1000
    # How long the web chat's long poll waits for a counselor's line before answering empty.
    webchat_poll_wait_s: int = 20
    # Redis through Sentinel: the sentinels' (host, port)s and the monitored service's name.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_service: str = "hotline"
    # The centre's time zone (IANA name): the console shows every time in it, with its name.
    time_zone: str = "Asia/Seoul"
    inbound_limits: InboundLimitPolicy = field(default_factory=InboundLimitPolicy)
    redis_pool: RedisPool = field(default_factory=RedisPool)
    # Where victims and counselors reach us (https://name); requests under another host name
    # than this one or the bound address are refused (backend/host_check.py).
    public_url: str | None = None
    # Prometheus' `/metrics` on a port of its own (backend/core/metrics.py); None: not served.
    metrics_port: int | None = None
    # "text" for a person at a terminal, "json" (one object a line) for a log collector.
    log_format: str = "text"
    # A published flow version goes live only once a second administrator approved it.
    flows_publish_approval: bool = False

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None and not self.redis_sentinels

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = _data_dir(env.get("HOTLINE_DATA_DIR", "./hotline-data"))
        database_url = (
            env.get("HOTLINE_DATABASE_URL") or f"sqlite:///{data_dir / 'hotline.sqlite3'}"
        )
        _check_url("HOTLINE_DATABASE_URL", database_url, DATABASE_SCHEMES, needs_host=False)
        redis_url = env.get("HOTLINE_REDIS_URL") or None
        if redis_url is not None:
            _check_url("HOTLINE_REDIS_URL", redis_url, REDIS_SCHEMES, needs_host=False)
        base_url = env.get("HOTLINE_TELEGRAM_BASE_URL") or None
        if base_url is not None:
            _check_url("HOTLINE_TELEGRAM_BASE_URL", base_url, {"http", "https"}, needs_host=True)
        webhook_url = env.get("HOTLINE_TELEGRAM_WEBHOOK_URL") or None
        if webhook_url is not None:
            _check_url("HOTLINE_TELEGRAM_WEBHOOK_URL", webhook_url, {"https"}, needs_host=True)
        public_url = env.get("HOTLINE_PUBLIC_URL") or None
        if public_url is not None:
            _check_url("HOTLINE_PUBLIC_URL", public_url, {"http", "https"}, needs_host=True)
        webhook_secret = _webhook_secret(env.get("HOTLINE_TELEGRAM_WEBHOOK_SECRET"), webhook_url)
        token = env.get("HOTLINE_TELEGRAM_TOKEN") or None
        if token is not None and (":" not in token or any(c.isspace() for c in token)):
            raise SettingsError("HOTLINE_TELEGRAM_TOKEN: not a bot token (expected <id>:<secret>)")
        flows_dir = Path(env.get("HOTLINE_FLOWS_DIR") or SHIPPED_FLOWS_DIR)
        if not flows_dir.is_dir():
            raise SettingsError(f"HOTLINE_FLOWS_DIR: {flows_dir} is not a directory")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=redis_url,
            http_host=env.get("HOTLINE_HTTP_HOST", "127.0.0.1") or "127.0.0.1",
            http_port=_int(env, "HOTLINE_HTTP_PORT", 8080, low=0, high=65535),
            telegram_token=token,
            telegram_base_url=base_url,
            telegram_webhook_url=webhook_url,
            telegram_webhook_secret=webhook_secret,
            telegram_max_file_bytes=_int(
                env,
                "HOTLINE_TELEGRAM_MAX_FILE_BYTES",
                TELEGRAM_DOWNLOAD_LIMIT_BYTES,
                low=1,
                high=TELEGRAM_DOWNLOAD_LIMIT_BYTES,
            ),
            flows_dir=flows_dir,
            kdf=KdfCost(
                time_cost=_int(env, "HOTLINE_KDF_TIME_COST", 3, low=1, high=100),
                memory_kib=_int(env, "HOTLINE_KDF_MEMORY_KIB", 65536, low=8, high=4 * 1024 * 1024),
                parallelism=_int(env, "HOTLINE_KDF_PARALLELISM", 1, low=1, high=64),
            ),
            kdf_concurrency=_int(env, "HOTLINE_KDF_CONCURRENCY", 2, low=1, high=64),
            bot_secret=_secret("HOTLINE_BOT_SECRET", env.get("HOTLINE_BOT_SECRET")),
            session_ttl_s=_int(
                env, "HOTLINE_SESSION_TTL_S", 24 * 3600, low=60, high=30 * 24 * 3600
            ),
            node_name=env.get("HOTLINE_NODE_NAME") or os.uname().nodename,
            center_public_key=env.get("HOTLINE_CENTER_PUBLIC_KEY") or None,
            receipt_salt=env.get("HOTLINE_RECEIPT_SALT") or None,
            receipt_secret=_secret("HOTLINE_RECEIPT_SECRET", env.get("HOTLINE_RECEIPT_SECRET")),
            kakao=_kakao(env),
            login=LoginPolicy(
                max_failures=_int(env, "HOTLINE_LOGIN_MAX_FAILURES", 5, low=1, high=100),
                lock_s=_int(env, "HOTLINE_LOGIN_LOCK_S", 900, low=1, high=7 * 24 * 3600),
                delay_ms=_int(env, "HOTLINE_LOGIN_DELAY_MS", 250, low=0, high=5000),
                require_totp=_bool(env, "HOTLINE_CONSOLE_REQUIRE_TOTP"),
                username_max_failures=_int(
                    env, "HOTLINE_LOGIN_USERNAME_MAX_FAILURES", 50, low=1, high=10_000
                ),
                username_lock_s=_int(
                    env, "HOTLINE_LOGIN_USERNAME_LOCK_S", 3600, low=1, high=7 * 24 * 3600
                ),
                session_idle_s=_int(
                    env, "HOTLINE_CONSOLE_SESSION_IDLE_S", 1800, low=1, high=24 * 3600
                ),
                session_max_s=_int(
                    env, "HOTLINE_CONSOLE_SESSION_MAX_S", 8 * 3600, low=1, high=7 * 24 * 3600
                ),
            ),
            retention=Retention(
                **{
                    f"{status}_days": _int(
                        env, f"HOTLINE_RETENTION_{status.upper()}_DAYS", default, low=0, high=36500
                    )
                    for status, default in _RETENTION_DEFAULT_DAYS.items()
                },
                interval_s=_int(env, "HOTLINE_RETENTION_INTERVAL_S", 3600, low=1, high=7 * 86400),
            ),
            sla=SlaPolicy(
                minutes_by_priority=_sla_minutes(env.get("HOTLINE_SLA_MINUTES")),
                warning_percent=_int(env, "HOTLINE_SLA_WARNING_PERCENT", 75, low=1, high=99),
            ),
            trusted_proxies=_trusted_proxies(env.get("HOTLINE_TRUSTED_PROXIES")),
            console_language=_console_language(env.get("HOTLINE_CONSOLE_LANGUAGE")),
            caseload_cap=_int(env, "HOTLINE_CASELOAD_CAP", 5, low=1, high=1000),
            first_start=_choice(env, "HOTLINE_FIRST_START", FIRST_START_CHOICES),
            telegram_poll_lease_s=_int(env, "HOTLINE_TELEGRAM_POLL_LEASE_S", 30, low=3, high=600),
            telegram_outgoing_lease_s=_int(
                env, "HOTLINE_TELEGRAM_OUTGOING_LEASE_S", 15, low=3, high=600
            ),
            telegram_webhook_max_connections=_int(
                env, "HOTLINE_TELEGRAM_WEBHOOK_MAX_CONNECTIONS", 100, low=1, high=100
            ),
            telegram_chat_messages_per_s=_int(
                env, "HOTLINE_TELEGRAM_CHAT_MESSAGES_PER_S", 1, low=1, high=1000
            ),
            telegram_bot_messages_per_s=_int(
                env, "HOTLINE_TELEGRAM_BOT_MESSAGES_PER_S", 30, low=1, high=1000
            ),
            stream_block_ms=_int(env, "HOTLINE_STREAM_BLOCK_MS", 1000, low=10, high=10_000),
            webchat_poll_wait_s=_int(env, "HOTLINE_WEBCHAT_POLL_WAIT_S", 20, low=1, high=50),
            redis_sentinels=_sentinels(env.get("HOTLINE_REDIS_SENTINELS"), redis_url),
            redis_sentinel_service=_sentinel_service(env.get("HOTLINE_REDIS_SENTINEL_SERVICE")),
            time_zone=_time_zone(env.get("HOTLINE_TIME_ZONE") or "Asia/Seoul"),
            inbound_limits=InboundLimitPolicy(
                per_pseudonym=_rate(env, "HOTLINE_LIMIT_PER_SENDER", "20/minute;200/hour"),
                per_address=_rate(env, "HOTLINE_LIMIT_PER_ADDRESS", "120/minute"),
                per_kakao_address=_rate(env, "HOTLINE_LIMIT_PER_KAKAO_ADDRESS", "6000/minute"),
                new_conversations_per_address=_rate(
                    env, "HOTLINE_LIMIT_NEW_CONVERSATIONS_PER_ADDRESS", "10/minute;60/hour"
                ),
            ),
            public_url=public_url,
            redis_pool=RedisPool(
                max_connections=_int(
                    env, "HOTLINE_REDIS_MAX_CONNECTIONS", 100, low=8, high=100_000
                ),
                wait_ms=_int(env, "HOTLINE_REDIS_POOL_WAIT_MS", 5000, low=1, high=60_000),
            ),
            metrics_port=_metrics_port(env),
            log_format=_log_format(env.get("HOTLINE_LOG_FORMAT")),
            flows_publish_approval=_bool(env, "HOTLINE_FLOWS_PUBLISH_APPROVAL"),
        )


_RETENTION_DEFAULT_DAYS = {"new": 0, "queued": 0, "claimed": 0, "active": 0, "closed": 90}


_SLA_ENTRY = re.compile(r"\s*([0-3])\s*:\s*(\d{1,5})\s*")


def _sla_minutes(raw: str | None) -> tuple[tuple[int, int], ...]:
    """`HOTLINE_SLA_MINUTES`: "priority:minutes" pairs, e.g. "3:2,2:5,1:15,0:60"."""
    if not raw:
        return SlaPolicy().minutes_by_priority
    pairs: dict[int, int] = {}
    for part in raw.split(","):
        match = _SLA_ENTRY.fullmatch(part)
        if match is None or int(match.group(2)) < 1:
            raise SettingsError(
                f"HOTLINE_SLA_MINUTES: {part.strip()!r} is not priority:minutes "
                '(priority 0-3, minutes at least 1), e.g. "3:2,2:5,1:15,0:60"'
            )
        priority = int(match.group(1))
        if priority in pairs:
            raise SettingsError(f"HOTLINE_SLA_MINUTES: priority {priority} is given twice")
        pairs[priority] = int(match.group(2))
    missing = sorted({0, 1, 2, 3} - set(pairs))
    if missing:
        raise SettingsError(
            f"HOTLINE_SLA_MINUTES: no target for priority {', '.join(map(str, missing))}"
        )
    return tuple(sorted(pairs.items(), reverse=True))


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"HOTLINE_TIME_ZONE: {name!r} is not a known time zone (e.g. Asia/Seoul)"
        ) from None
    return name


LOG_FORMATS = ("text", "json")


def _metrics_port(env: Mapping[str, str]) -> int | None:
    if not env.get("HOTLINE_METRICS_PORT"):
        return None
    port = _int(env, "HOTLINE_METRICS_PORT", 0, low=0, high=65535)
    if port == _int(env, "HOTLINE_HTTP_PORT", 8080, low=0, high=65535) and port != 0:
        raise SettingsError("HOTLINE_METRICS_PORT: must differ from HOTLINE_HTTP_PORT")
    return port


def _log_format(raw: str | None) -> str:
    value = (raw or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise SettingsError(f"HOTLINE_LOG_FORMAT: must be one of {', '.join(LOG_FORMATS)}")
    return value


def _trusted_proxies(raw: str | None) -> tuple[Network, ...]:
    try:
        return parse_networks(raw or "")
    except ValueError as exc:
        raise SettingsError(
            f"HOTLINE_TRUSTED_PROXIES: {exc}; give addresses or CIDR blocks, e.g. "
            '"127.0.0.1, 10.0.0.0/8"'
        ) from None


def _data_dir(raw: str) -> Path:
    path = Path(raw).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise SettingsError(
            f"HOTLINE_DATA_DIR: {path} is not a writable directory ({exc.strerror})"
        ) from None
    return path.resolve()


def _check_url(name: str, value: str, schemes: set[str], *, needs_host: bool) -> None:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise SettingsError(f"{name}: not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise SettingsError(f"{name}: scheme {parts.scheme or '(none)'!r} is not one of {allowed}")
    if needs_host and not parts.hostname:
        raise SettingsError(f"{name}: URL has no host")


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: {value} is outside {low}..{high}")
    return value


CONSOLE_LANGUAGES = ("ko", "en")


def _console_language(raw: str | None) -> str:
    """`HOTLINE_CONSOLE_LANGUAGE`: a language the console has a catalog for."""
    if not raw:
        return "ko"
    if raw not in CONSOLE_LANGUAGES:
        raise SettingsError(
            f"HOTLINE_CONSOLE_LANGUAGE: {raw!r} is not one of {', '.join(CONSOLE_LANGUAGES)}"
        )
    return raw


def _sentinels(raw: str | None, redis_url: str | None) -> tuple[tuple[str, int], ...]:
    """`HOTLINE_REDIS_SENTINELS`: "host:port" entries, comma-separated."""
    if not raw:
        return ()
    if redis_url is not None:
        raise SettingsError(
            "HOTLINE_REDIS_SENTINELS: set either it or HOTLINE_REDIS_URL, not both "
            "(with sentinels, they name the primary)"
        )
    found: list[tuple[str, int]] = []
    for part in raw.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"HOTLINE_REDIS_SENTINELS: {part.strip()!r} is not host:port, "
                'e.g. "10.0.0.5:26379, 10.0.0.6:26379, 10.0.0.7:26379"'
            )
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _sentinel_service(raw: str | None) -> str:
    name = (raw or "hotline").strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise SettingsError(
            "HOTLINE_REDIS_SENTINEL_SERVICE: 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )
    return name


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first when unset."""
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}")
    return raw


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate in the `limits` notation ("20/minute;200/hour"), or "off" for none."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() == "off":
        return ""
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise SettingsError(
            f'{name}: {raw!r} is not a rate such as "20/minute" or "20/minute;200/hour" (or "off")'
        )
    return raw.strip()


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise SettingsError(f"{name}: must be true or false")
    return raw in {"true", "1", "yes"}


def _webhook_secret(raw: str | None, webhook_url: str | None) -> str | None:
    if not raw:
        if webhook_url is not None:
            raise SettingsError(
                "HOTLINE_TELEGRAM_WEBHOOK_SECRET: required when HOTLINE_TELEGRAM_WEBHOOK_URL is "
                "set (16-256 characters of A-Z, a-z, 0-9, _ and -)"
            )
        return None
    if not _WEBHOOK_SECRET.fullmatch(raw):
        raise SettingsError(
            "HOTLINE_TELEGRAM_WEBHOOK_SECRET: must be 16-256 characters of A-Z, a-z, 0-9, _ and -"
        )
    return raw


def _secret(name: str, raw: str | None) -> bytes | None:
    if not raw:
        return None
    secret = raw.encode()
    if len(secret) < 32:
        raise SettingsError(f"{name}: must be at least 32 characters")
    return secret


def _kakao(env: Mapping[str, str]) -> KakaoSettings | None:
    bot_id = env.get("HOTLINE_KAKAO_BOT_ID") or None
    secret = env.get("HOTLINE_KAKAO_SECRET") or None
    if bot_id is None and secret is None:
        return None
    if bot_id is None:
        raise SettingsError("HOTLINE_KAKAO_BOT_ID: must be set with HOTLINE_KAKAO_SECRET")
    if secret is None or len(secret) < 16:
        raise SettingsError("HOTLINE_KAKAO_SECRET: must be set, at least 16 characters")
    operator = (env.get("HOTLINE_KAKAO_OPERATOR") or "false").lower()
    if operator not in {"true", "false", "1", "0", "yes", "no"}:
        raise SettingsError("HOTLINE_KAKAO_OPERATOR: must be true or false")
    return KakaoSettings(
        bot_id=bot_id,
        secret=secret,
        operator=operator in {"true", "1", "yes"},
        sync_budget_ms=_int(env, "HOTLINE_KAKAO_SYNC_BUDGET_MS", 3500, low=0, high=4500),
        callback_wait_ms=_int(env, "HOTLINE_KAKAO_CALLBACK_WAIT_MS", 45_000, low=0, high=50_000),
        callback_hosts=_host_names(
            "HOTLINE_KAKAO_CALLBACK_HOSTS", env.get("HOTLINE_KAKAO_CALLBACK_HOSTS")
        )
        or KAKAO_CALLBACK_HOSTS,
    )


def _host_names(name: str, raw: str | None) -> tuple[str, ...]:
    """Comma- or space-separated host names or addresses, lower-cased; empty when unset."""
    hosts = []
    for part in (raw or "").replace(",", " ").split():
        host = part.strip("[]").lower()
        if not (_HOST_NAME.fullmatch(host) or ":" in host):
            raise SettingsError(f"{name}: {part!r} is not a host name (no scheme, port or path)")
        hosts.append(host)
    return tuple(hosts)
