"""How long a button label may be on each channel, and the short labels flows give for it.

A label too long for its channel is cut by the door (`bot.channel.fit`): on KakaoTalk, whose
quick replies show 14 characters, "Illegal filming" became "Illegal filmi…" and "Deepfake or
synthesized images" "Deepfake or s…" (issue 18). So a locale may give a label a shorter
wording for one channel, under `labels.<channel>.<key>`, and the linter (F012) checks that
every label, as each channel will show it, fits that channel. The doors take their limits from
here, so the linter and the doors never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

LABELS_PREFIX = "labels."

# Characters a button label may have, by channel name (`Inbound.channel`).
BUTTON_LABEL_LIMITS: Mapping[str, int] = MappingProxyType({"web": 80, "telegram": 64, "kakao": 14})


def channel_key(key: str, channel: str) -> str:
    """Where a locale keeps `key`'s label for `channel`."""
    return f"{LABELS_PREFIX}{channel}.{key}"
