"""Redis records open only under their own key name and their own label's key."""

from __future__ import annotations

from backend.core.record_cipher import RecordCipher


def test_a_record_opens_only_where_it_was_sealed() -> None:
    cipher = RecordCipher(b"r" * 32, "session")
    sealed = cipher.seal("hotline:session:aa", b"the victim's answers")
    assert b"answers" not in sealed
    assert cipher.open("hotline:session:aa", sealed) == b"the victim's answers"
    assert cipher.open("hotline:session:bb", sealed) is None, "moved to another conversation"
    assert RecordCipher(b"r" * 32, "telegram-chat").open("hotline:session:aa", sealed) is None
    assert RecordCipher(b"x" * 32, "session").open("hotline:session:aa", sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert cipher.open("hotline:session:aa", tampered) is None
    assert cipher.open("hotline:session:aa", sealed[:12]) is None
    assert cipher.open("hotline:session:aa", None) is None
    assert cipher.seal("k", b"same") != cipher.seal("k", b"same"), "a fresh nonce each time"
