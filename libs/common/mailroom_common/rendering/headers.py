"""Header lines as bytes: cleaned of line breaks (no injection), RFC 2047 only when needed.

ASCII values take a fast path (no folding needed below 998 bytes a line); a non-ASCII value,
one that looks like an encoded word, or an overlong one becomes RFC 2047 encoded words (folded,
at most 76 characters a line), cached per distinct value.
"""

from __future__ import annotations

import re
import time
from binascii import b2a_base64
from email.utils import formataddr, formatdate
from functools import lru_cache
from urllib.parse import quote

# Line breaks (including Unicode ones) and tabs become spaces; other control characters go.
_CONTROLS = {code: None for code in (*range(0x20), 0x7F)}
_PHRASE = _CONTROLS | {code: " " for code in (0x09, 0x0A, 0x0D, 0x85, 0x2028, 0x2029)}
# Values inside angle brackets (addresses, URLs, message ids): no whitespace at all.
_TOKEN = _CONTROLS | {code: None for code in (0x20, 0x85, 0xA0, 0x2028, 0x2029)}
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_ADDR_SPEC = re.compile(
    r"""(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+|"(?:[ !#-\[\]-~]|\\[ -~])*")"""
    r"@(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[!-Z^-~]+\])"
)
_MAX_LINE = 998
_WORD_LINE = 76  # RFC 2047: a line holding encoded words is at most 76 characters
_WORD_START = "=?utf-8?b?"
_WORD_END = "?="

# Headers that the renderer writes itself: extra headers may not add or replace them.
RESERVED = frozenset(
    name.lower()
    for name in (
        "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version", "Reply-To",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type",
        "Content-Transfer-Encoding", "Sender", "Return-Path",
    )
)  # fmt: skip


def clean_phrase(value: str) -> str:
    """Free text for a header (subject, extra header): one line (a line break becomes a
    space), trimmed."""
    if "\r" in value:
        value = value.replace("\r\n", "\n")
    return value.translate(_PHRASE).strip()


def clean_name(value: str) -> str:
    """A display name: one line, runs of spaces collapsed (as a mail reader shows it)."""
    return " ".join(value.translate(_PHRASE).split())


def clean_address(value: str) -> str:
    """An address: control characters (line breaks) removed, surrounding spaces trimmed."""
    return value.translate(_CONTROLS).strip()


def clean_token(value: str) -> str:
    """An address, URL or message id: no whitespace, no control characters."""
    return value.translate(_TOKEN)


def valid_field_name(name: str) -> bool:
    return _FIELD_NAME.fullmatch(name) is not None


def valid_address(address: str) -> bool:
    """A plain ASCII addr-spec (no IDNA, no SMTPUTF8) of sensible length."""
    return len(address) <= 320 and _ADDR_SPEC.fullmatch(address) is not None


def url_for_header(url: str) -> str:
    """A URL to put inside <...>: whitespace and brackets removed, non-ASCII percent-encoded."""
    url = clean_token(url).replace("<", "").replace(">", "")
    if not url.isascii():
        url = quote(url, safe="!#$%&'()*+,/:;=?@[]~")
    return url


def unstructured(name: str, value: str) -> bytes:
    """``Name: value`` CRLF for a cleaned unstructured value (Subject, extra headers)."""
    if value.isascii() and "=?" not in value and len(name) + len(value) + 2 <= _MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    return _encoded_unstructured(name, value)


@lru_cache(maxsize=4096)
def _encoded_unstructured(name: str, value: str) -> bytes:
    return f"{name}: {encoded_words(value, _WORD_LINE - len(name) - 2)}\r\n".encode("ascii")


def encoded_words(value: str, first_line_room: int) -> str:
    """RFC 2047 "B" encoded words for ``value``, folded so that each line holds at most
    ``_WORD_LINE`` characters (``first_line_room`` on the first line, after the field name).

    Words are cut between UTF-8 characters, as RFC 2047 requires, and after a space where there
    is one: readers drop the folding white space between two encoded words (RFC 2047 6.2), but
    the stdlib parser keeps it inside display names, so a cut in mid-word would show there as a
    stray space. ``email.header.Header`` would do the encoding at ~90 µs a call, too slow for a
    value per recipient (display names).
    """
    data = value.encode("utf-8")
    words: list[str] = []
    start = 0
    room = first_line_room
    while start < len(data):
        size = max(6, (room - len(_WORD_START) - len(_WORD_END)) // 4 * 3)
        end = min(start + size, len(data))
        if end < len(data):
            space = data.rfind(b" ", start + size // 2, end)
            if space >= 0:
                end = space + 1  # cut after a space (see below)
            while data[end] & 0xC0 == 0x80:
                end -= 1  # never inside a character
        words.append(_WORD_START + b2a_base64(data[start:end], newline=False).decode() + _WORD_END)
        start = end
        room = _WORD_LINE - 1  # continuation lines start with a space
    return "\r\n ".join(words)


def address(name: str, display_name: str, addr: str) -> bytes:
    """``Name: Display <addr>`` CRLF with formataddr's quoting; arguments already cleaned."""
    if not display_name:
        return f"{name}: {addr}\r\n".encode("ascii")
    if display_name.isascii() and "=?" not in display_name:
        line = f"{name}: {formataddr((display_name, addr))}\r\n"
        if len(line) <= _MAX_LINE + 2:
            return line.encode("ascii")
    return _encoded_address(name, display_name, addr)


@lru_cache(maxsize=4096)
def _encoded_address(name: str, display_name: str, addr: str) -> bytes:
    words = encoded_words(display_name, _WORD_LINE - len(name) - 2)
    return f"{name}: {words} <{addr}>\r\n".encode("ascii")


class DateHeader:
    """The Date line, formatted at most once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            value = formatdate(now, localtime=False, usegmt=True)
            self._line = f"Date: {value}\r\n".encode("ascii")
            self._second = now
        return self._line
