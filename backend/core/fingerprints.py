"""What the logs may say about an unexpected exception: its type and a fingerprint, never its
message or its traceback's text.

An exception raised while handling a victim's words may quote them (a `ValueError` about a bad
value, a database error echoing a parameter, a `KeyError` of a text), and a traceback prints
the message of every exception in the chain. So the boundaries that log unexpected errors log
`describe(exc)`: the type's name, where it was raised, and a short fingerprint of the type and
the functions the traceback passed through, which groups repeats of one bug across processes
and versions without saying anything the exception carried.
"""

from __future__ import annotations

import hashlib
import os
import traceback


def fingerprint(exc: BaseException) -> str:
    """12 hex digits from the exception's type and its traceback's files and functions (not
    line numbers, so an unrelated edit above does not change it), causes included."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        digest.update(f"{kind.__module__}.{kind.__qualname__}\n".encode())
        for frame in traceback.extract_tb(current.__traceback__):
            digest.update(f"{os.path.basename(frame.filename)}:{frame.name}\n".encode())
        current = current.__cause__ or current.__context__
    return digest.hexdigest()[:12]


def describe(exc: BaseException) -> str:
    """`<Type> at <file>:<line> [<fingerprint>]`, for a log line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where} [{fingerprint(exc)}]"
