"""Every error the core raises has one base, so each adapter translates them at one boundary.

An error a person reads in the console (a refused account change, a flow version that cannot
be published) is raised with its English text marked by `N_` and its values given by name:

    raise AccountError(N_("an account named %(name)s exists"), name=username)

`str(error)` is the English with the values filled in (logs, the CLI); the console translates
`message_id` through its catalog and fills in `values` after (`backend/console/i18n.py:
error_text`), so a Korean counselor reads Korean. `where=` puts a place before the text, never
translated (a flow file's `path:line`): `FlowError(N_("must be true or false"), where="a:3")`
reads `a:3: must be true or false`. `python -m backend.console.catalog_extract`
finds the marked texts in `backend/`, `backend/core/` and `backend/flows/`.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """Marks an error's text for the console's catalog; it is translated where it is shown."""
    return message


class Phrase(str):
    """A value of an error's message that is a marked catalog text itself ("the note"), so the
    console translates it too; any other value (a name someone typed) is shown as it is."""

    __slots__ = ()


class HotlineError(Exception):
    """Base of every error raised by hotline's core."""

    def __init__(self, *args: object, where: str | None = None, **values: object) -> None:
        text = args[0] if len(args) == 1 and isinstance(args[0], str) else None
        if text is not None and (values or where is not None):
            english = text % values if values else text
            super().__init__(english if where is None else f"{where}: {english}")
        else:
            super().__init__(*args)
        # The untranslated text and its values, for a translation at the boundary, and the
        # place said before it as it is.
        self.message_id = text
        self.values = values
        self.where = where


class SettingsError(HotlineError):
    """A setting is missing, malformed or unusable; the message names the setting."""


class NotInitialisedError(SettingsError):
    """The database has no centre key pair, and this start may not make one (no terminal)."""


class PollerTakenError(SettingsError):
    """Another worker long-polls this bot token; Telegram allows one poller per token."""


class SealingError(HotlineError):
    """A sealed envelope could not be opened: wrong key, tampering or truncation."""


class KeyUnwrapError(HotlineError):
    """A wrapped private key could not be unwrapped with the given password or recovery key."""


class FlowError(HotlineError):
    """A flow definition is invalid and cannot be compiled."""


class CaseNotFoundError(HotlineError):
    """No case has the requested id."""


class AuthenticationError(HotlineError):
    """A login failed: unknown user or wrong password (never says which)."""


class CaseTransitionError(HotlineError):
    """The case's status does not allow this change, or another counselor changed it first."""


class ReceiptNotFoundError(HotlineError):
    """No case answers to this case code (mistyped, or the case was erased)."""


class OutcomeRequiredError(HotlineError):
    """A case is closed only with one of the fixed outcomes."""


class CaseWorkError(HotlineError):
    """A note, referral, reply or takedown request was refused: bad input or a wrong state."""


class LegalHoldError(HotlineError):
    """The case is under a legal hold: it cannot be shredded until the hold is released."""


class ApprovalRequiredError(CaseWorkError):
    """A takedown request needs a supervisor's approval (not its author's) before this step."""
