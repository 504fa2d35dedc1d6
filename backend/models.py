"""Storage models: sealed blobs plus the minimum plaintext needed to route a case.

Nothing here holds a platform id, a name, a phone number or anything a victim wrote in clear.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, LargeBinary, UniqueConstraint
from sqlmodel import Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class CaseStatus(StrEnum):
    NEW = "new"
    QUEUED = "queued"
    CLAIMED = "claimed"
    ACTIVE = "active"
    CLOSED = "closed"
    PURGED = "purged"


# The case status machine: which status may follow which. Purging is allowed from every status
# but itself (retention, or a victim erasing their case); nothing leaves "purged".
ALLOWED_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    CaseStatus.NEW: frozenset({CaseStatus.QUEUED, CaseStatus.PURGED}),
    CaseStatus.QUEUED: frozenset({CaseStatus.CLAIMED, CaseStatus.CLOSED, CaseStatus.PURGED}),
    CaseStatus.CLAIMED: frozenset(
        {CaseStatus.ACTIVE, CaseStatus.QUEUED, CaseStatus.CLOSED, CaseStatus.PURGED}
    ),
    CaseStatus.ACTIVE: frozenset({CaseStatus.CLOSED, CaseStatus.PURGED}),
    # A victim who comes back with their case code reopens a closed case.
    CaseStatus.CLOSED: frozenset({CaseStatus.QUEUED, CaseStatus.PURGED}),
    CaseStatus.PURGED: frozenset(),
}


class Role(StrEnum):
    COUNSELOR = "counselor"
    SUPERVISOR = "supervisor"
    ADMINISTRATOR = "administrator"


class Case(SQLModel, table=True):
    __tablename__ = "cases"

    id: str = Field(primary_key=True, max_length=64)
    idempotency_key: str = Field(unique=True, max_length=128)
    received_at: datetime = Field(default_factory=utcnow, index=True)
    status: str = Field(default=CaseStatus.QUEUED.value, max_length=16, index=True)
    priority: int = Field(default=0, index=True)
    language: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    category: str = Field(max_length=32)
    key_id: str = Field(max_length=32)
    created_at: str = Field(max_length=40)
    # The exact header bytes the envelope was sealed with: the AEAD's associated data.
    header: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # None once the case is crypto-shredded.
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # When the status last changed: retention counts from here.
    status_changed_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_by: int | None = Field(default=None)
    # When the bot last found the victim unreachable (they blocked it): a counselor's cue that
    # replies will not arrive. None while they can be reached.
    victim_unreachable_at: datetime | None = Field(default=None)


class Counselor(SQLModel, table=True):
    __tablename__ = "counselors"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=64)
    password_hash: str = Field(max_length=256, repr=False)
    role: str = Field(default=Role.COUNSELOR.value, max_length=16)
    must_change_password: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)
    # The TOTP secret sealed under the password (backend/totp.py); None: two-factor is off.
    totp_secret: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )
    # The last TOTP step accepted: a code is good once, and only for a later step.
    totp_last_step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class CenterKey(SQLModel, table=True):
    __tablename__ = "center_keys"

    key_id: str = Field(primary_key=True, max_length=32)
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    active: bool = Field(default=True)


class WrappedPrivateKey(SQLModel, table=True):
    """One wrapping of one centre private key for one holder (a counselor, or the recovery key)."""

    __tablename__ = "wrapped_private_keys"
    __table_args__ = (UniqueConstraint("key_id", "holder"),)

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(foreign_key="center_keys.key_id", max_length=32)
    holder: str = Field(max_length=80)  # "counselor:<id>" or "recovery"
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)


class AuditEntry(SQLModel, table=True):
    """One link of the append-only, hash-chained audit log (see backend/audit.py).

    `seq` and `prev_hash` are unique: two nodes appending at once cannot both extend the same
    link, so the chain never forks; the loser retries on the new head.
    """

    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True)
    at: str = Field(max_length=40)
    actor: str = Field(max_length=80)
    action: str = Field(max_length=32)
    subject: str = Field(max_length=80)
    detail: str = Field(default="", max_length=200)
    prev_hash: str = Field(unique=True, max_length=64)
    hash: str = Field(unique=True, max_length=64)


class Receipt(SQLModel, table=True):
    """A case code, stored only as its slow hash (see backend/receipts.py)."""

    __tablename__ = "receipts"

    digest: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    issued_at: datetime = Field(default_factory=utcnow)


class DeploymentSecret(SQLModel, table=True):
    """Per-deployment values made once (e.g. the receipt salt); never rotated in place."""

    __tablename__ = "deployment_secrets"

    name: str = Field(primary_key=True, max_length=32)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
