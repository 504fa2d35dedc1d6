"""Which new passwords a counselor may choose (issue 18: `aaaaaaaaaaaa` was accepted).

A password unwraps the centre's private key, so it is the one secret an offline guesser of a
database dump works on; the rules refuse what guessers try first:
- fewer than `MIN_PASSWORD_LENGTH` characters;
- a common password: `common_passwords.txt.gz` is the 20,000-entry list Django ships
  (`django/contrib/auth/common-passwords.txt.gz`, BSD-3-Clause, made by Royce Williams from
  leaked-password corpora), compared lowercased, also with leading and trailing digits and
  punctuation taken off (`password2024!!!!` is `password`);
- the username inside it;
- low variety: fewer than `MIN_DISTINCT` different characters (`aaaaaaaaaaaa`, `abababababab`).
"""

from __future__ import annotations

import functools
import gzip
import string
from enum import StrEnum
from importlib import resources

from backend.passwords import MIN_PASSWORD_LENGTH

MIN_DISTINCT = 5
_DECORATION = string.digits + string.punctuation + string.whitespace


class PasswordProblem(StrEnum):
    TOO_SHORT = "too_short"
    COMMON = "common"
    HAS_USERNAME = "has_username"
    LOW_VARIETY = "low_variety"


@functools.cache
def _common() -> frozenset[str]:
    packed = (resources.files("backend") / "common_passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(packed).decode().split())


def problem(password: str, username: str) -> PasswordProblem | None:
    """The first rule `password` breaks for `username`, or None when it may be used."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return PasswordProblem.TOO_SHORT
    lowered = password.lower()
    core = lowered.strip(_DECORATION)
    if lowered in _common() or core in _common() or "".join(lowered.split()) in _common():
        return PasswordProblem.COMMON
    name = username.strip().lower()
    if len(name) >= 3 and name in lowered:
        return PasswordProblem.HAS_USERNAME
    if len(set(lowered)) < MIN_DISTINCT:
        return PasswordProblem.LOW_VARIETY
    return None
