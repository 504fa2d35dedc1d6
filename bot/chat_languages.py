"""The web chat's language choice: which of the offered languages a browser prefers
(`Accept-Language`, by its q-values), and the options, each named in its own language."""

from __future__ import annotations

import html
from collections.abc import Sequence

from babel import Locale, UnknownLocaleError

FALLBACK = "ko"


def preferred(accept_language: str, offered: Sequence[str]) -> str:
    """The browser's most wanted language among `offered` (by its primary subtag), or Korean."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in offered and quality > 0:
            ranked.append((-quality, position, base))
    if ranked:
        return min(ranked)[2]
    return FALLBACK if FALLBACK in offered or not offered else offered[0]


def own_name(language: str) -> str:
    try:
        name = Locale.parse(language).get_display_name(language)
    except (UnknownLocaleError, ValueError):
        return language
    return name or language


def options(offered: Sequence[str], chosen: str) -> str:
    return "\n".join(
        f'      <option value="{html.escape(code)}" lang="{html.escape(code)}"'
        f"{' selected' if code == chosen else ''}>{html.escape(own_name(code))}</option>"
        for code in offered
    )
