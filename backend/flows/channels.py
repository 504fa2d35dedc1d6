"""What each channel can show and take: button label lengths, short labels, files.

Files: only some doors can carry a file from the victim (Telegram). The web chat and KakaoTalk
cannot, so the flows must never ask there for screenshots the victim has no way to send (issue
18): the runtime tells the flow (`ctx.files`) and the flow decides what it asks.

Labels: a label too long for its channel is cut by the door (`bot.channel.fit`): on KakaoTalk, whose
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


# The doors a victim can send files through (`Inbound.channel`).
FILE_CHANNELS = frozenset({"telegram"})
