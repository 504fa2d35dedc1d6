"""Storage models: sealed blobs plus the minimum plaintext needed to route a case.

Nothing here holds a platform id, a name, a phone number or anything a victim wrote in clear.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import LargeBinary, UniqueConstraint
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


class Counselor(SQLModel, table=True):
    __tablename__ = "counselors"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=64)
    password_hash: str = Field(max_length=256, repr=False)
    role: str = Field(default=Role.COUNSELOR.value, max_length=16)
    must_change_password: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)


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
