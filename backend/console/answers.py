"""A report's opened answers as a counselor reads them: words, never Python (issue 18: the case
page showed `flags ['handoff']`) and never the live chat's `reply_key`, which is a key for the
relay and means nothing to a person (the console still reads it from the opened answers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backend.cases import envelope_of
from backend.console.i18n import gettext as _
from backend.core.errors import CaseNotFoundError, SealingError
from backend.core.live_chat import REPLY_KEY_ANSWER
from backend.core.sealing import Envelope, open_envelope
from backend.models import Case

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


def open_case_body(
    case: Case, private_keys: Mapping[str, X25519PrivateKey]
) -> dict[str, Any] | None:
    """The case's report body opened in memory (answers, evidence records, sealed files), with
    the request for a counselor that joined it (issue 18: a handoff joins the conversation's
    case): its answers (the request, the reply key, signs noticed since) are added to the
    report's, which stay as the victim gave them. None when the keys cannot open the report."""
    body = _opened(envelope_of(case), private_keys)
    if body is None or case.handoff_envelope is None:
        return body
    try:
        handoff = _opened(Envelope.from_bytes(case.handoff_envelope), private_keys)
    except SealingError:
        handoff = None
    report = body.get("answers")
    asked = handoff.get("answers") if handoff is not None else None
    if isinstance(report, dict) and isinstance(asked, dict):
        body["answers"] = joined(report, asked)
    return body


def joined(report: Mapping[str, Any], handoff: Mapping[str, Any]) -> dict[str, Any]:
    """A report's answers with those of the request that joined it: the report's values as
    given, what only the request says added, the signs noticed of both."""
    merged = {**handoff, **report}
    flags = [*_listed(report.get("flags")), *_listed(handoff.get("flags"))]
    if flags:
        merged["flags"] = list(dict.fromkeys(flags))
    return merged


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _opened(
    envelope: Envelope, private_keys: Mapping[str, X25519PrivateKey]
) -> dict[str, Any] | None:
    key = private_keys.get(envelope.header.key_id)
    if key is None:
        return None
    try:
        body = json.loads(open_envelope(envelope, key))
    except (SealingError, CaseNotFoundError, ValueError):
        return None
    return body if isinstance(body, dict) else None
