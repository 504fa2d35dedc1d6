"""Texts by key from `flows/locales/<lang>.yaml`, with a fallback language."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import FlowError
from backend.flows.spec import load_yaml

FALLBACK_LANGUAGE = "ko"


@dataclass(frozen=True)
class Texts:
    by_language: Mapping[str, Mapping[str, str]]
    fallback: str = FALLBACK_LANGUAGE

    @classmethod
    def load(cls, directory: Path) -> Texts:
        by_language: dict[str, dict[str, str]] = {}
        for path in sorted(directory.glob("*.yaml")):
            flat: dict[str, str] = {}
            _flatten(load_yaml(path), "", flat, str(path))
            by_language[path.stem] = flat
        if FALLBACK_LANGUAGE not in by_language:
            raise FlowError(f"{directory}: the fallback language {FALLBACK_LANGUAGE!r} is missing")
        return cls(by_language)

    def language_for(self, hint: str | None) -> str:
        """The best language we have for a platform's hint such as `en-US` or `ko`."""
        if hint:
            base = hint.lower().replace("_", "-").split("-")[0]
            if base in self.by_language:
                return base
        return self.fallback

    def get(self, key: str, language: str) -> str:
        found = self.by_language.get(language, {}).get(key)
        if found is None:
            found = self.by_language[self.fallback].get(key)
        if found is None:
            raise FlowError(f"text key {key!r} is missing in {self.fallback!r}")
        return found


def _flatten(node: Any, prefix: str, out: dict[str, str], source: str) -> None:
    if not isinstance(node, dict):
        raise FlowError(f"{source}: {prefix or 'top level'} must be a mapping")
    for key, value in node.items():
        if not isinstance(key, str):
            raise FlowError(f"{source}: key {key!r} under {prefix or 'top level'} is not text")
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, str):
            out[full] = value
        else:
            _flatten(value, full, out, source)
