"""A report's opened answers as a counselor reads them: words, never Python (issue 18: the case
page showed `flags ['handoff']`) and never the live chat's `reply_key`, which is a key for the
relay and means nothing to a person (the console still reads it from the opened answers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.console.i18n import gettext as _
from backend.core.live_chat import REPLY_KEY_ANSWER

HIDDEN = frozenset({REPLY_KEY_ANSWER})


def N_(message: str) -> str:
    """gettext's marker: extracted into the catalog now, translated when shown."""
    return message


LABELS = {
    "flags": N_("Signs noticed"),
    "request": N_("Request"),
    "addition": N_("Added later"),
    "replies_shown": N_("Replies shown to the victim"),
}

# The triage and engine flags (flows/triage.yaml, backend/flows/engine.py).
FLAG_WORDS = {
    "handoff": N_("asked for a counselor"),
    "self_harm": N_("spoke of self-harm"),
    "threat": N_("is being threatened"),
    "minor": N_("may be a minor"),
}


def label(name: str) -> str:
    known = LABELS.get(name)
    return _(known) if known else name.replace("_", " ").strip().capitalize()


def words(value: Any, *, flags: bool = False) -> str:
    """One answer in plain words: lists joined, mappings as "name: value", yes/no, a dash."""
    if value is None or value in ("", [], {}):
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, Mapping):
        return "; ".join(f"{label(str(k))}: {words(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(
            _(FLAG_WORDS[str(item)]) if flags and str(item) in FLAG_WORDS else words(item)
            for item in value
        )
    return str(value)


def readable(answers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, words) for every answer a counselor should read, in the report's order."""
    return [
        (label(name), words(value, flags=name == "flags"))
        for name, value in answers.items()
        if name not in HIDDEN
    ]
