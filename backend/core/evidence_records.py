"""Evidence records: one per file a victim gave, sealed with her report (issue 12, point 3).

The bot never keeps a file's bytes (except a screenshot she agreed to have kept, sealed to the
centre key at upload). What travels for every file is its record: what it is (`kind`, MIME
type, size), why it was given (`purpose`: fingerprint only, takedown matching, or a kept
screenshot), its SHA-256, its PDQ where she asked for matching, when it was received (UTC)
and through which channel. The engine makes the records (`record_for`); the report's sealed
body carries them (`RECORDS_FIELD`); the case page, every takedown draft and the evidence
manifest for police or a platform read them back (`records_of`), so what reaches the case is
what the engine produced, never a shape of a test's making.

A kept screenshot's record names its place in the body's `sealed_files` (`sealed_index`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

from backend.core.conversation import Attachment

# Where the report's sealed body keeps the records (beside `answers` and `sealed_files`).
RECORDS_FIELD: Final = "evidence_records"
# The files slot's `keep:` (backend/flows/spec.py FILES_KEEP) -> the record's purpose.
PURPOSES: Final = {"hashes": "hash_only", "match": "match", "sealed": "screenshot"}
PURPOSE_LABELS: Final = {
    "hash_only": "fingerprint only",
    "match": "takedown matching",
    "screenshot": "kept screenshot",
}
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_MIME = re.compile(r"^[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,80}$")
# What a kept screenshot may be served as in the console; anything else is a download.
VIEWABLE_MIME: Final = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})


@dataclass(frozen=True)
class EvidenceRecord:
    kind: str
    purpose: str
    sha256: str
    size_bytes: int
    received_at: str  # ISO 8601, UTC
    channel: str
    pdq: str = ""
    mime_type: str = ""
    sealed_index: int | None = None

    def line(self) -> str:
        """One line for a takedown request: every fact, nothing a victim said."""
        parts = [f"{self.kind} SHA-256 {self.sha256}"]
        if self.pdq:
            parts.append(f"PDQ {self.pdq}")
        parts.append(
            f"({PURPOSE_LABELS.get(self.purpose, self.purpose)}; "
            f"{self.mime_type or 'type unknown'}; {self.size_bytes} bytes; "
            f"received {self.received_at} via {self.channel})"
        )
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_for(
    attachment: Attachment, keep: str, channel: str, now_s: int, sealed_index: int | None
) -> dict[str, Any]:
    """The record of one file as the engine keeps it in the session (plain JSON)."""
    # The step's clock (the runtime's); a step run without one (a dialog table) says none.
    received = datetime.fromtimestamp(now_s, UTC) if now_s else None
    return EvidenceRecord(
        kind=attachment.kind[:16],
        purpose=PURPOSES.get(keep, "hash_only"),
        sha256=attachment.sha256[:64],
        size_bytes=max(0, int(attachment.size_bytes)),
        received_at=(
            received.isoformat(timespec="seconds").replace("+00:00", "Z") if received else ""
        ),
        channel=channel[:16],
        pdq=(attachment.pdq or "")[:64] if keep == "match" else "",
        mime_type=(attachment.mime_type or "")[:120],
        sealed_index=sealed_index,
    ).as_dict()


def records_of(body: Mapping[str, Any]) -> list[EvidenceRecord]:
    """The records of an opened report body; malformed entries are skipped, never guessed."""
    found = body.get(RECORDS_FIELD)
    records: list[EvidenceRecord] = []
    for raw in found if isinstance(found, list) else []:
        record = _parsed(raw)
        if record is not None:
            records.append(record)
    return records


def _parsed(raw: object) -> EvidenceRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        sealed_index = raw.get("sealed_index")
        record = EvidenceRecord(
            kind=str(raw["kind"])[:16],
            purpose=str(raw["purpose"]),
            sha256=str(raw["sha256"]),
            size_bytes=int(raw["size_bytes"]),
            received_at=str(raw["received_at"])[:40],
            channel=str(raw["channel"])[:16],
            pdq=str(raw.get("pdq") or ""),
            mime_type=str(raw.get("mime_type") or ""),
            sealed_index=int(sealed_index) if sealed_index is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None
    if record.purpose not in PURPOSE_LABELS or not _HEX.match(record.sha256):
        return None
    if record.pdq and not _HEX.match(record.pdq):
        return None
    if record.mime_type and not _MIME.match(record.mime_type):
        record = EvidenceRecord(**{**record.as_dict(), "mime_type": ""})
    return record


def sealed_file(body: Mapping[str, Any], index: int) -> bytes | None:
    """The sealed bytes (an envelope to the centre key) of the body's `index`th kept file."""
    files = body.get("sealed_files")
    if not isinstance(files, list) or not 0 <= index < len(files):
        return None
    try:
        return base64.b64decode(str(files[index]), validate=True)
    except (ValueError, binascii.Error):
        return None


def manifest(
    case_id: str,
    records: Sequence[EvidenceRecord],
    links: Sequence[Mapping[str, Any]],
    generated_at: datetime,
) -> tuple[dict[str, Any], str]:
    """The evidence manifest of a case and its SHA-256 over a canonical encoding (sorted
    keys, no spaces, UTF-8), which the export's audit link carries, so the manifest is
    bound into the hash-chained audit log."""
    document = {
        "case_id": case_id,
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "records": [r.as_dict() for r in records],
        "audit_links": [dict(link) for link in links],
    }
    return document, manifest_digest(document)


def manifest_digest(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
