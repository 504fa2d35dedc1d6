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


class Outcome(StrEnum):
    """How a case ended; closing needs one. Each is a service the centre gives or a reason it
    could not (domain/categories.md: where help comes from; evidence.md; takedown.md)."""

    REFERRED = "referred"  # passed to a service (police, 117/1388, legal or medical help)
    TAKEDOWN_REQUESTED = "takedown_requested"  # deletion asked of a platform
    EVIDENCE_GUIDANCE = "evidence_guidance"  # told what to preserve and how
    SAFETY_GUIDANCE = "safety_guidance"  # sextortion: don't pay, stop replying, preserve
    INFORMATION_GIVEN = "information_given"  # counselling, rights, how to report
    NO_ACTION_WANTED = "no_action_wanted"  # the victim chose not to go on
    VICTIM_UNREACHABLE = "victim_unreachable"  # left and never came back
    DUPLICATE = "duplicate"  # the same matter as another case (e.g. a follow-up)
    OUT_OF_SCOPE = "out_of_scope"  # not a digital sex crime; pointed elsewhere


class TakedownStatus(StrEnum):
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    SENT = "sent"
    ANSWERED = "answered"
    REMOVED = "removed"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


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
    # A returning victim's request names the case of their receipt: the case it follows.
    follows: str | None = Field(default=None, max_length=64, index=True)
    # How the case ended (`Outcome`); required to close, cleared when it is reopened.
    outcome: str | None = Field(default=None, max_length=32)
    # When the bot last found the victim unreachable (they blocked it): a counselor's cue that
    # replies will not arrive. None while they can be reached.
    victim_unreachable_at: datetime | None = Field(default=None)
    # When the victim asked, with her receipt, to erase the case: supervisors see it listed
    # until it is shredded (issue 12).
    erase_requested_at: datetime | None = Field(default=None)
    # A legal hold (who set it is in the audit log): nothing shreds the case, not even
    # retention, until it is released. The reason is staff's words, never the victim's.
    legal_hold_reason: str | None = Field(default=None, max_length=200)
    # The coarse age group from the routing header (minor, adult, not_said: issue 16), in clear
    # for the statistics; the exact age or band stays sealed in the report.
    age_group: str = Field(default="not_said", max_length=16)
    # The victim's latest request for a counselor on this case, when she asked after the case
    # was stored (its report, then `/human`): a whole envelope (`Envelope.to_bytes()`) sealed
    # to the centre key on its own, since the store cannot open the report to merge them
    # (issue 18: a handoff joins the conversation's case). Its answers carry the reply key.
    handoff_envelope: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )


class TranscriptEntry(SQLModel, table=True):
    """One entry of a case's live-chat transcript, kept in SQL as the chat runs (issue 12): a
    line as it was sealed to the centre key, or a content-free event. Redis keeps the live
    buffer only; a backup holds these, and a shred deletes them with the case."""

    __tablename__ = "transcript_entries"
    __table_args__ = (UniqueConstraint("case_id", "entry_id"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=64, index=True)
    entry_id: str = Field(max_length=40)  # the Redis stream id: the transcript's order
    sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # An event's fields (kind, by, at, ref) as JSON; None for a line.
    event: str | None = Field(default=None, max_length=400)


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
    # False once an administrator deactivated the account: no sign-in, no key wraps, no cases.
    active: bool = Field(default=True)


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
    """A case code, stored only as its digest (see backend/core/receipt_codes.py)."""

    __tablename__ = "receipts"

    digest: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    issued_at: datetime = Field(default_factory=utcnow)
    # `receipts.DigestScheme`: rows from before migration 0006 are the Argon2id ones.
    digest_scheme: str = Field(
        default="hmac-sha256",
        max_length=16,
        sa_column_kwargs={"server_default": "argon2id"},
    )


class DeploymentSecret(SQLModel, table=True):
    """Per-deployment values made once (e.g. the receipt salt); never rotated in place."""

    __tablename__ = "deployment_secrets"

    name: str = Field(primary_key=True, max_length=32)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)


class CaseNote(SQLModel, table=True):
    """A counselor's note on a case, sealed under the case's data key (see backend/case_work.py):
    shredding the case shreds its notes. Author and time are plain; the words are not."""

    __tablename__ = "case_notes"

    id: str = Field(primary_key=True, max_length=32)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    author_id: int
    created_at: datetime = Field(default_factory=utcnow)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)


class CaseReferral(SQLModel, table=True):
    """A referral to a service of the resource directory, with the victim's consent to it.

    Service, consent and how it was obtained are plain (no victim content); the free-text
    detail is sealed like a note.
    """

    __tablename__ = "case_referrals"

    id: str = Field(primary_key=True, max_length=32)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    author_id: int
    created_at: datetime = Field(default_factory=utcnow)
    service_id: str = Field(max_length=64)
    consent: bool
    consent_method: str = Field(max_length=32)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)


class CaseReply(SQLModel, table=True):
    """A counselor's reply for a victim who comes back with their receipt (backend/core/replies.py).

    Two sealed copies: one under the case's data key for the console, one to the victim's reply
    key, which only the receipt code derives (the backend never holds it).
    """

    __tablename__ = "case_replies"

    id: str = Field(primary_key=True, max_length=32)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    author_id: int
    created_at: datetime = Field(default_factory=utcnow)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    for_victim: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)


class TakedownRequest(SQLModel, table=True):
    """A takedown request's draft and its tracking (backend/takedown.py).

    The fields (URLs, uploader, description, hashes) and the platform's answer are sealed under
    the case's data key; status, people and dates are plain so the list can be tracked.
    """

    __tablename__ = "takedown_requests"

    id: str = Field(primary_key=True, max_length=32)
    case_id: str = Field(foreign_key="cases.id", index=True, max_length=64)
    language: str = Field(max_length=8)
    status: str = Field(default=TakedownStatus.DRAFT.value, max_length=24, index=True)
    created_by: int
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Who last changed the fields: the approver must be someone else than them and the author.
    updated_by: int
    approved_by: int | None = Field(default=None)
    approved_at: datetime | None = Field(default=None)
    sent_by: int | None = Field(default=None)
    sent_at: datetime | None = Field(default=None)
    next_check_at: datetime | None = Field(default=None, index=True)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    # The platform's answer, sealed; None until one is recorded.
    answer: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class FlowVersion(SQLModel, table=True):
    """One published bundle of flows (backend/flow_versions.py): immutable once written.

    `files` is the bundle's text files as JSON (`{"report.flow.yaml": "...", ...}`), `digest` the
    SHA-256 of their paths and bytes: a conversation is pinned to the digest, so any worker can
    load the version it started on, after a restart too.
    """

    __tablename__ = "flow_versions"

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(index=True, max_length=64)
    author: str = Field(max_length=80)
    created_at: datetime = Field(default_factory=utcnow)
    message: str = Field(default="", max_length=500)
    files: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    # Waiting for a second administrator's approval (HOTLINE_FLOWS_PUBLISH_APPROVAL); never
    # published while it waits, never rolled back to if it was not approved.
    pending: bool = Field(default=False)
    approved_by: str | None = Field(default=None, max_length=80)


class FlowPointer(SQLModel, table=True):
    """The one published version every worker follows (name "published")."""

    __tablename__ = "flow_pointer"

    name: str = Field(primary_key=True, max_length=16)
    version: int = Field(foreign_key="flow_versions.id")
    changed_at: datetime = Field(default_factory=utcnow)
    changed_by: str = Field(max_length=80)


class FlowDraft(SQLModel, table=True):
    """An administrator's unpublished edit of the bundle: never seen by a victim."""

    __tablename__ = "flow_drafts"

    counselor_id: int = Field(primary_key=True, foreign_key="counselors.id")
    base_version: int | None = Field(default=None)
    files: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    updated_at: datetime = Field(default_factory=utcnow)
