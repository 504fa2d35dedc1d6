"""The shipped locale texts by dotted key, read straight from the YAML, for asserting on texts."""

from __future__ import annotations

from typing import Any

import yaml

from backend.core.settings import SHIPPED_FLOWS_DIR


def texts_of(language: str) -> dict[str, str]:
    raw = yaml.safe_load((SHIPPED_FLOWS_DIR / "locales" / f"{language}.yaml").read_text())
    flat: dict[str, str] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk(raw, "")
    return flat
