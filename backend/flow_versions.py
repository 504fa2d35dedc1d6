"""Flow bundles as immutable versions in SQL, with one published pointer.

A version is written once (its files, their digest, who, when, why) and never changed; what
victims meet is whichever version the pointer names. Publishing checks the files the way
`hotline flows check` and `test` do and refuses on any error, a failed dialog table or a flow
under the coverage floor, so the pointer only ever names a bundle that passed; rolling back
moves the pointer to an earlier version. Both write an audit link in the same transaction and
then tell every worker on a Redis channel (each also looks on its own every few seconds).

`flows/` in the repository is the seed: the first start with no published version imports it
as version 1, so a fresh install behaves as before.

Drafts (the console's studio) are files per administrator, kept here too, so a half-done edit
is never in any place a worker reads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from backend import audit
from backend.audit import AuditAction
from backend.console.published_bundle import canned_of
from backend.core import bundle_mirror, redis_keys
from backend.core.errors import N_, FlowError
from backend.flows import bundle_files
from backend.flows.bundle_files import BundleFiles, Checked
from backend.flows.lint import Problem
from backend.models import FlowDraft, FlowPointer, FlowVersion, utcnow

log = logging.getLogger(__name__)

PUBLISHED = "published"
SEED_AUTHOR = "system:seed"


class PublishRefusedError(FlowError):
    """A bundle was not published: it fails its checks, or it is what is published already."""

    def __init__(
        self,
        message: str,
        reasons: list[str] | None = None,
        checked: Checked | None = None,
        **values: Any,
    ) -> None:
        super().__init__(message, **values)
        self.reasons = reasons or []
        # What the checks found, so the console can say the reasons in its own language.
        self.checked = checked


class VersionNotFoundError(FlowError):
    """No stored flow version has this number."""


class ApprovalRefusedError(FlowError):
    """A flow version cannot be approved: not waiting, or by the administrator who made it."""


@dataclass(frozen=True)
class VersionInfo:
    """One stored version, without its files."""

    number: int
    digest: str
    author: str
    created_at: datetime
    message: str
    published: bool = False
    pending: bool = False


@dataclass(frozen=True)
class Draft:
    files: dict[str, str]
    base_version: int | None
    updated_at: datetime


def encode_files(files: BundleFiles) -> bytes:
    return json.dumps(dict(sorted(files.items())), ensure_ascii=False).encode("utf-8")


def decode_files(blob: bytes) -> dict[str, str]:
    data = json.loads(blob.decode("utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise FlowError("a stored flow version is not a mapping of paths to texts")
    return data


class FlowVersionStore:
    """The versions table and its pointer; `redis` (optional) hears of every change at once."""

    def __init__(
        self, engine: AsyncEngine, redis: Redis | None = None, *, approval: bool = False
    ) -> None:
        """`approval`: a publish waits for a second administrator (`approve`)."""
        self._engine = engine
        self._redis = redis
        self.approval = approval

    async def published(self) -> VersionInfo | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(FlowVersion)
                    .join(FlowPointer, col(FlowPointer.version) == col(FlowVersion.id))
                    .where(col(FlowPointer.name) == PUBLISHED)
                )
            ).first()
        return None if row is None else _info(FlowVersion.model_validate(row._mapping), True)

    async def versions(self) -> list[VersionInfo]:
        """Every version, newest first, without files."""
        published = await self.published()
        columns = [c for c in FlowVersion.__table__.columns if c.name != "files"]  # type: ignore[attr-defined]  # SQLModel tables carry __table__
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*columns).order_by(col(FlowVersion.id).desc()))).all()
        current = published.number if published is not None else None
        return [
            VersionInfo(
                r.id, r.digest, r.author, r.created_at, r.message, r.id == current, r.pending
            )
            for r in rows
        ]

    async def files(self, number: int) -> dict[str, str]:
        async with self._engine.connect() as conn:
            blob = (
                await conn.execute(
                    select(col(FlowVersion.files)).where(col(FlowVersion.id) == number)
                )
            ).scalar_one_or_none()
        if blob is None:
            raise VersionNotFoundError(N_("no flow version %(n)s"), n=number)
        return decode_files(blob)

    async def publish(self, files: BundleFiles, author: str, message: str) -> VersionInfo:
        """Check, store as a new version and point at it; `PublishRefusedError` says why not."""
        checked = check_bundle(files)
        if not checked.publishable:
            raise PublishRefusedError(
                N_("the bundle does not pass its checks"), checked.reasons(), checked
            )
        return await self.store_checked(files, checked, author, message)

    async def store_checked(
        self, files: BundleFiles, checked: Checked, author: str, message: str
    ) -> VersionInfo:
        digest = bundle_files.digest(files)
        current = await self.published()
        if current is not None and current.digest == digest:
            raise PublishRefusedError(
                N_("identical to the published version %(n)s"), n=current.number
            )
        message = message.strip()[:500]
        blob = encode_files(files)
        waits = self.approval

        async def work(conn: AsyncConnection) -> int:
            number = await _insert_version(conn, digest, author, message, blob, pending=waits)
            if not waits:
                await _point(conn, number, author)
            detail = digest[:16] + (" awaiting approval" if waits else "")
            await audit.append(conn, author, AuditAction.FLOWS_PUBLISH, f"flows:{number}", detail)
            return number

        number = await audit.with_audit(self._engine, work)
        if waits:
            log.info("flows version %d awaits a second administrator", number)
            return VersionInfo(number, digest, author, utcnow(), message, False, True)
        log.info("flows version %d published", number)
        await self._mirror(number, digest)
        return VersionInfo(number, digest, author, utcnow(), message, True)

    async def approve(self, number: int, actor: str) -> VersionInfo:
        """A second administrator publishes a version that waits; its author may not."""
        target = {v.number: v for v in await self.versions()}.get(number)
        if target is None:
            raise VersionNotFoundError(N_("no flow version %(n)s"), n=number)
        if not target.pending:
            raise ApprovalRefusedError(N_("version %(n)s is not waiting for approval"), n=number)
        if target.author == actor:
            raise ApprovalRefusedError(N_("a second administrator approves, not the author"))

        async def work(conn: AsyncConnection) -> None:
            changed = await conn.execute(
                update(FlowVersion)
                .where(col(FlowVersion.id) == number, col(FlowVersion.pending).is_(True))
                .values(pending=False, approved_by=actor)
            )
            if changed.rowcount != 1:
                raise ApprovalRefusedError(
                    N_("version %(n)s is not waiting for approval"), n=number
                )
            await _point(conn, number, actor)
            await audit.append(
                conn, actor, AuditAction.FLOWS_APPROVE, f"flows:{number}", target.digest[:16]
            )

        await audit.with_audit(self._engine, work)
        log.info("flows version %d approved and published", number)
        await self._mirror(number, target.digest)
        return VersionInfo(
            number, target.digest, target.author, target.created_at, target.message, True
        )

    async def rollback(self, number: int, actor: str) -> VersionInfo:
        """Point at an earlier version again; it was checked when it was first published."""
        versions = {v.number: v for v in await self.versions()}
        target = versions.get(number)
        if target is None:
            raise VersionNotFoundError(N_("no flow version %(n)s"), n=number)
        if target.published:
            raise PublishRefusedError(
                N_("version %(n)s is the published version already"), n=number
            )
        if target.pending:
            raise PublishRefusedError(
                N_("version %(n)s was never approved; approve it instead"), n=number
            )

        async def work(conn: AsyncConnection) -> None:
            await _point(conn, number, actor)
            await audit.append(
                conn, actor, AuditAction.FLOWS_ROLLBACK, f"flows:{number}", target.digest[:16]
            )

        await audit.with_audit(self._engine, work)
        log.info("flows rolled back to version %d", number)
        await self._mirror(number, target.digest)
        return VersionInfo(
            number, target.digest, target.author, target.created_at, target.message, True
        )

    async def seed(self, directory: Path, canned: Traversable | None = None) -> VersionInfo | None:
        """Import the shipped directory as version 1 when nothing is published yet; None when a
        version is. The seed is linted (an invalid one is a `FlowError`) but its dialog tables
        are the repository's CI's business, so a start never waits for them."""
        if await self.published() is not None:
            return None
        files = bundle_files.read_directory(directory)
        if canned is not None and not any(p.startswith("canned/") for p in files):
            for entry in canned.iterdir():
                if entry.name.endswith(".yaml"):
                    files[f"canned/{entry.name}"] = entry.read_text(encoding="utf-8")
        bundle, problems = bundle_files.compile_files(files)
        if bundle is None:
            errors = [str(p) for p in problems if p.is_error]
            raise FlowError("the seed flows do not load: " + "; ".join(errors[:5]))
        digest = bundle_files.digest(files)
        blob = encode_files(files)

        async def work(conn: AsyncConnection) -> int:
            seeded = f"seed: {directory.name}"
            number = await _insert_version(conn, digest, SEED_AUTHOR, seeded, blob)
            await conn.execute(
                insert(FlowPointer).values(
                    name=PUBLISHED, version=number, changed_at=utcnow(), changed_by=SEED_AUTHOR
                )
            )
            await audit.append(
                conn, SEED_AUTHOR, AuditAction.FLOWS_PUBLISH, f"flows:{number}", digest[:16]
            )
            return number

        try:
            number = await audit.with_audit(self._engine, work)
        except IntegrityError:
            # Another node seeded first (the pointer's primary key); theirs is as good.
            return None
        log.info("flows seeded from the shipped directory as version %d", number)
        await self._mirror(number, digest)
        return VersionInfo(number, digest, SEED_AUTHOR, utcnow(), "seed", True)

    async def save_draft(self, counselor_id: int, files: BundleFiles, base: int | None) -> None:
        bundle_files.check_paths(files)
        blob = encode_files(files)
        async with self._engine.begin() as conn:
            await conn.execute(delete(FlowDraft).where(col(FlowDraft.counselor_id) == counselor_id))
            await conn.execute(
                insert(FlowDraft).values(
                    counselor_id=counselor_id, base_version=base, files=blob, updated_at=utcnow()
                )
            )

    async def draft(self, counselor_id: int) -> Draft | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(FlowDraft).where(col(FlowDraft.counselor_id) == counselor_id)
                )
            ).first()
        if row is None:
            return None
        found = FlowDraft.model_validate(row._mapping)
        return Draft(decode_files(found.files), found.base_version, found.updated_at)

    async def discard_draft(self, counselor_id: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(FlowDraft).where(col(FlowDraft.counselor_id) == counselor_id))

    async def _mirror(self, number: int, digest: str) -> None:
        """Tell the workers (through Redis, which they read): the version's files, then the
        pointer. Without Redis here, the backends' `sync_mirror` does it within seconds."""
        if self._redis is None:
            return
        try:
            await bundle_mirror.write_version(self._redis, digest, await self._blob(number))
            await bundle_mirror.point(self._redis, bundle_mirror.Pointer(digest, number))
        except RedisError:
            log.warning("flows published, but not mirrored to Redis yet; the backends retry")

    async def sync_mirror(self, keep: int = redis_keys.FLOWS_MIRROR_KEEP) -> bool:
        """Make Redis hold the newest `keep` versions and the pointer SQL has; True when the
        pointer changed (a publish made elsewhere, or a Redis that lost its data)."""
        if self._redis is None:
            return False
        published = await self.published()
        if published is None:
            return False
        wanted = [v for v in (await self.versions())[:keep] if not v.pending]
        if published.number not in {v.number for v in wanted}:
            wanted.append(published)
        lacking = set(await bundle_mirror.missing(self._redis, [v.digest for v in wanted]))
        for version in wanted:
            if version.digest in lacking:
                blob = await self._blob(version.number)
                await bundle_mirror.write_version(self._redis, version.digest, blob)
                lacking.discard(version.digest)
        pointer = bundle_mirror.Pointer(published.digest, published.number)
        return await bundle_mirror.point(self._redis, pointer)

    async def _blob(self, number: int) -> bytes:
        async with self._engine.connect() as conn:
            blob = (
                await conn.execute(
                    select(col(FlowVersion.files)).where(col(FlowVersion.id) == number)
                )
            ).scalar_one_or_none()
        if not isinstance(blob, bytes):
            raise VersionNotFoundError(N_("no flow version %(n)s"), n=number)
        return blob


def check_bundle(files: BundleFiles) -> Checked:
    """`bundle_files.check`, and the console's canned responses read as the console reads them."""
    checked = bundle_files.check(files)
    try:
        canned_of(files)
    except ValueError as exc:
        checked.problems.append(Problem("F000", "canned", 1, str(exc)))
        checked.bundle = None
    return checked


async def _insert_version(
    conn: AsyncConnection,
    digest: str,
    author: str,
    message: str,
    blob: bytes,
    *,
    pending: bool = False,
) -> int:
    result = await conn.execute(
        insert(FlowVersion)
        .values(
            digest=digest,
            author=author,
            created_at=utcnow(),
            message=message,
            files=blob,
            pending=pending,
        )
        .returning(col(FlowVersion.id))
    )
    number = result.scalar_one()
    if not isinstance(number, int):  # pragma: no cover - an integer primary key
        raise FlowError("the database gave no version number")
    return number


async def _point(conn: AsyncConnection, number: int, actor: str) -> None:
    changed = await conn.execute(
        update(FlowPointer)
        .where(col(FlowPointer.name) == PUBLISHED)
        .values(version=number, changed_at=utcnow(), changed_by=actor)
    )
    if changed.rowcount == 0:
        await conn.execute(
            insert(FlowPointer).values(
                name=PUBLISHED, version=number, changed_at=utcnow(), changed_by=actor
            )
        )


def _info(row: FlowVersion, published: bool) -> VersionInfo:
    return VersionInfo(row.id or 0, row.digest, row.author, row.created_at, row.message, published)
