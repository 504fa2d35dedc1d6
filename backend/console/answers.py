"""A report's opened answers as a counselor reads them: words, never Python (issue 18: the case
page showed `flags ['handoff']`) and never the live chat's `reply_key`, which is a key for the
relay and means nothing to a person (the console still reads it from the opened answers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.core.live_chat import REPLY_KEY_ANSWER

HIDDEN = frozenset({REPLY_KEY_ANSWER})

LABELS = {
    "flags": "Signs noticed",
    "request": "Request",
    "addition": "Added later",
    "replies_shown": "Replies shown to the victim",
}

# The triage and engine flags (flows/triage.yaml, backend/flows/engine.py).
FLAG_WORDS = {
    "handoff": "asked for a counselor",
    "self_harm": "spoke of self-harm",
    "threat": "is being threatened",
    "minor": "may be a minor",
}


def label(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").strip().capitalize()


def words(value: Any, *, flags: bool = False) -> str:
    """One answer in plain words: lists joined, mappings as "name: value", yes/no, a dash."""
    if value is None or value in ("", [], {}):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "; ".join(f"{label(str(k))}: {words(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(
            FLAG_WORDS.get(str(item), str(item)) if flags else words(item) for item in value
        )
    return str(value)


def readable(answers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, words) for every answer a counselor should read, in the report's order."""
    return [
        (label(name), words(value, flags=name == "flags"))
        for name, value in answers.items()
        if name not in HIDDEN
    ]
