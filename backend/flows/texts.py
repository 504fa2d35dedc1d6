"""Texts by key from `flows/locales/<lang>.yaml`, with a fallback language.

Korean and English are complete; other locales may be partial and name their own fallback in a
`_meta: {fallback: en, complete: false}` block (a Vietnamese speaker is better served by English
than by Korean). Every language ends at `FALLBACK_LANGUAGE`. The safety-critical keys
(`safety.*`) must exist in every locale: the linter checks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.core.errors import N_, FlowError
from backend.flows import source
from backend.flows.channels import channel_key

FALLBACK_LANGUAGE = "ko"
SAFETY_PREFIX = "safety."
_PLACEHOLDER = re.compile(r"\{([a-z_]{1,32})\}")


@dataclass(frozen=True)
class Locale:
    language: str
    texts: Mapping[str, str]
    fallback: str
    complete: bool
    source: str
    lines: Mapping[str, int]


@dataclass(frozen=True)
class Texts:
    locales: Mapping[str, Locale]
    fallback: str = FALLBACK_LANGUAGE

    @classmethod
    def load(cls, directory: Path) -> Texts:
        locales: dict[str, Locale] = {}
        for path in sorted(directory.glob("*.yaml")):
            locales[path.stem] = _locale(path.stem, source.read(path))
        if FALLBACK_LANGUAGE not in locales:
            raise FlowError(
                N_("the fallback language %(language)r is missing"),
                where=str(directory),
                language=FALLBACK_LANGUAGE,
            )
        for locale in locales.values():
            if locale.fallback not in locales:
                raise FlowError(
                    N_("fallback %(fallback)r has no locale"),
                    where=locale.source,
                    fallback=locale.fallback,
                )
        return cls(locales)

    @property
    def by_language(self) -> Mapping[str, Mapping[str, str]]:
        return {language: locale.texts for language, locale in self.locales.items()}

    def language_for(self, hint: str | None) -> str:
        """The best language we have for a platform's hint such as `en-US` or `ko`."""
        if hint:
            base = hint.lower().replace("_", "-").split("-")[0]
            if base in self.locales:
                return base
        return self.fallback

    def get(self, key: str, language: str) -> str:
        seen: set[str] = set()
        current: str | None = language
        while current is not None and current not in seen:
            seen.add(current)
            locale = self.locales.get(current)
            if locale is None:
                break
            found = locale.texts.get(key)
            if found is not None:
                return found
            current = locale.fallback
        found = self.locales[self.fallback].texts.get(key)
        if found is None:
            raise FlowError(
                N_("text key %(key)r is missing in %(fallback)r"), key=key, fallback=self.fallback
            )
        return found

    def label(self, key: str, language: str, channel: str | None) -> str:
        """A button's label as `channel` shows it: the language's short wording for that
        channel (`labels.<channel>.<key>`) if it has one, else its own label. A language's own
        full label is preferred to a fallback language's short one."""
        if channel is None:
            return self.get(key, language)
        short = channel_key(key, channel)
        seen: set[str] = set()
        current: str | None = language
        while current is not None and current not in seen:
            seen.add(current)
            locale = self.locales.get(current)
            if locale is None:
                break
            found = locale.texts.get(short) or locale.texts.get(key)
            if found is not None:
                return found
            current = locale.fallback
        return self.get(key, language)

    def render(self, key: str, language: str, values: Mapping[str, str]) -> str:
        """The text with `{name}` placeholders filled; unknown names are left as they are."""
        text = self.get(key, language)
        if "{" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def _locale(language: str, doc: source.Document) -> Locale:
    data = doc.data
    if not isinstance(data, dict):
        raise FlowError(N_("a locale file is a mapping of text keys"), where=doc.source)
    meta = data.get("_meta", {})
    if not isinstance(meta, dict) or set(meta) - {"fallback", "complete"}:
        raise FlowError(N_("`_meta` takes only `fallback` and `complete`"), where=doc.source)
    fallback = meta.get("fallback", FALLBACK_LANGUAGE)
    complete = meta.get("complete", True)
    if not isinstance(fallback, str) or not isinstance(complete, bool):
        raise FlowError(
            N_("`_meta` fallback is a language, complete true or false"), where=doc.source
        )
    flat: dict[str, str] = {}
    lines: dict[str, int] = {}
    body = {k: v for k, v in data.items() if k != "_meta"}
    _flatten(body, (), flat, lines, doc)
    return Locale(language, flat, fallback, complete, doc.source, lines)


def _flatten(
    node: Any,
    prefix: tuple[str, ...],
    out: dict[str, str],
    lines: dict[str, int],
    doc: source.Document,
) -> None:
    if not isinstance(node, dict):
        where = ".".join(prefix) or "top level"
        raise FlowError(
            N_("%(key)s must be a mapping or text"),
            where=f"{doc.source}:{doc.line(prefix)}",
            key=where,
        )
    for key, value in node.items():
        path = (*prefix, key)
        full = ".".join(path)
        if isinstance(value, str):
            out[full] = value
            lines[full] = doc.line(path)
        else:
            _flatten(value, path, out, lines, doc)
