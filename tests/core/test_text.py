"""The one bytes → text rule (:mod:`veo_archiver.text`)."""

from __future__ import annotations

from veo_archiver.text import optional_text, text


def test_bytes_are_decoded_and_invalid_bytes_replaced_never_raised() -> None:
    assert text(b"caf\xc3\xa9") == "café"
    assert text(b"ok\xff") == "ok\ufffd"
    assert text("already text") == "already text"


def test_other_values_go_through_str_and_none_stays_none_only_when_asked() -> None:
    assert (text(3), text(1.5), text(None)) == ("3", "1.5", "None")
    assert optional_text(None) is None
    assert (optional_text(b"x"), optional_text(0)) == ("x", "0")
