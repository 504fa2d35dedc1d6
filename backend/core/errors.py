"""Every error the core raises has one base, so each adapter translates them at one boundary."""


class HotlineError(Exception):
    """Base of every error raised by hotline's core."""


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
