"""Evidence files: checked against the size limit, fetched on the server, hashed, dropped.

The bot never keeps an intimate image. A file is downloaded into memory only (never to disk:
the getFile URL holds the bot token, so only the server may fetch it), hashed with SHA-256
for the chain of custody and, for images the victim wants matched for takedown, with PDQ (the
perceptual hash hash-matching services use), and the buffer is wiped. What leaves this module
is an `Attachment`: facts and hashes, no bytes in clear. Only a screenshot of threats or
messages the victim agreed to have kept leaves as bytes, sealed to the centre key at once.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable

import numpy as np
import pdqhash
from PIL import Image
from telegram import Bot

from backend.core.conversation import Attachment
from backend.core.errors import HotlineError

log = logging.getLogger(__name__)

# PDQ reduces every picture to 64x64 internally; decoding beyond this side only costs time.
_PDQ_SIDE_PX = 512
# Screenshots kept sealed ride in the encrypted session until the report: each at most this.
MAX_SEALED_FILE_BYTES = 1024 * 1024
# Refuse to decode a picture larger than this (a "decompression bomb" would exhaust memory).
_MAX_PIXELS = 50_000_000


class FileTooLargeError(HotlineError):
    """A file is larger than the bot accepts (HOTLINE_TELEGRAM_MAX_FILE_BYTES)."""


def pdq_hex(data: bytes | bytearray) -> str | None:
    """PDQ of an image as 64 hex digits, or None when it is not an image PDQ can read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > _MAX_PIXELS:
                return None
            image.draft("RGB", (_PDQ_SIDE_PX, _PDQ_SIDE_PX))
            rgb = image.convert("RGB")
            rgb.thumbnail((_PDQ_SIDE_PX, _PDQ_SIDE_PX))
            bits, _quality = pdqhash.compute(np.asarray(rgb))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:064x}"


def facts(
    data: bytes | bytearray,
    kind: str,
    mime_type: str | None,
    *,
    want_pdq: bool,
    seal: Callable[[bytes | bytearray], bytes] | None = None,
) -> Attachment:
    image = kind == "photo" or (mime_type or "").startswith("image/")
    return Attachment(
        kind=kind,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pdq=pdq_hex(data) if want_pdq and image else None,
        mime_type=mime_type,
        sealed=None if seal is None else seal(data),
    )


async def collect(
    bot: Bot,
    file_id: str,
    kind: str,
    *,
    declared_bytes: int | None,
    mime_type: str | None,
    max_bytes: int,
    want_pdq: bool,
    seal: Callable[[bytes | bytearray], bytes] | None = None,
) -> Attachment:
    """Fetch one file into memory, hash it and wipe it; `FileTooLargeError` over the limit.
    With `seal` (a screenshot the victim agreed to have kept) the bytes leave sealed to the
    centre key, which the bot cannot open again.

    The limit is checked on what Telegram declares before anything is fetched, again on what
    getFile reports, and on what actually arrived.
    """
    if declared_bytes is not None and declared_bytes > max_bytes:
        raise FileTooLargeError("declared size over the limit")
    file = await bot.get_file(file_id)
    if file.file_size is not None and file.file_size > max_bytes:
        raise FileTooLargeError("getFile size over the limit")
    data = await file.download_as_bytearray()
    try:
        if len(data) > max_bytes:
            raise FileTooLargeError("downloaded size over the limit")
        return facts(data, kind, mime_type, want_pdq=want_pdq, seal=seal)
    finally:
        data[:] = bytes(len(data))  # wipe: the bytes must not linger until collected
