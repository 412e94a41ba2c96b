"""Replies of SMTP servers are scrubbed of the account's credentials in every form."""

from __future__ import annotations

import base64

import pytest
from mailroom_common.smtp_replies import MAX_REPLY_CHARS, ReplyScrubber, scrub_reply

USER, PASSWORD = "mailer@example.test", "c0rrect-h0rse"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "reply",
    [
        f"535 5.7.8 bad password {PASSWORD}",
        f"500 5.5.2 unrecognized command: AUTH PLAIN {b64(chr(0) + USER + chr(0) + PASSWORD)}",
        f"500 unrecognized: AUTH PLAIN {b64(USER + chr(0) + USER + chr(0) + PASSWORD)}",
        f"334 got {b64(PASSWORD)}",  # AUTH LOGIN's second answer
        f"334 got {b64(PASSWORD).rstrip('=')}",
        f"550 relay denied for {USER}:{PASSWORD}",
        f"550 first half {PASSWORD[:5]}\r\n{PASSWORD[5:]}",  # not the password: kept
        f"500 5.5.1 AUTH LOGIN {b64(USER)} {b64(PASSWORD)}",
        f"250 ok {b64('x' + chr(0) + 'y' + chr(0) + 'other-secret')} queued",
    ],
)
def test_no_form_of_the_password_survives(reply: str) -> None:
    scrubbed = scrub_reply(reply, USER, PASSWORD)
    assert PASSWORD not in scrubbed
    for form in (b64(PASSWORD), b64(PASSWORD).rstrip("=")):
        assert form not in scrubbed
    assert "\r" not in scrubbed and "\n" not in scrubbed
    assert b64(chr(0) + USER + chr(0) + PASSWORD) not in scrubbed
    assert b64("x" + chr(0) + "y" + chr(0) + "other-secret") not in scrubbed


def test_an_ordinary_reply_is_kept_as_it_is() -> None:
    reply = "250 2.0.0 Ok: queued as 4Fq2X1pZ7Kz9"
    assert scrub_reply(reply, USER, PASSWORD) == reply


def test_control_characters_and_size_are_bounded() -> None:
    reply = "451 4.3.0 " + "a\x00b\r\nc\x7f" * 20_000
    scrubbed = ReplyScrubber(USER, PASSWORD)(reply)
    assert len(scrubbed) <= MAX_REPLY_CHARS
    assert all(ch.isprintable() for ch in scrubbed)
    assert scrubbed.startswith("451 4.3.0 a b c")
