"""The MIME skeleton of a multipart/alternative message, and encoding its bodies.

Everything that is the same for every recipient is built once: the boundary, the part headers,
and the quoted-printable encoding of the static text of the templates. Per recipient, only what
the template expressions produced is encoded (``binascii.b2a_qp``, in C) and the encoded
segments are joined with quoted-printable soft line breaks (``=`` CRLF, which a decoder
removes). A segment is encoded as if it started a line, and its last line is kept at most 75
characters long, so every line stays within the 76 characters quoted-printable allows.
"""

from __future__ import annotations

import secrets
from binascii import b2a_base64, b2a_qp
from collections.abc import Iterable
from dataclasses import dataclass

_ASCII = bytes(range(128))
_LINE = 76
_BASE64_CHUNK = 57  # input bytes per 76-character base64 line
_MIN_CACHED = 32  # shorter static pieces are encoded with their neighbours
_SOFT_BREAK = b"=\r\n"
_EQUALS = ord("=")


def new_boundary() -> str:
    """A boundary that cannot occur in a quoted-printable or base64 body: quoted-printable
    writes "=" only before two hex digits or a line break, base64 has no "_"."""
    return "=_mailroom_" + secrets.token_hex(16)


def crlf(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = text.replace("\n", "\r\n")
    return text


def qp_segment(data: bytes) -> bytes:
    """Quoted-printable for ``data`` (CRLF line endings), starting a line; a soft line break may
    follow the result directly."""
    # b2a_qp ends its soft-broken lines the way the first line break it meets ends: give it one
    encoded = b2a_qp(data + b"\r\n", quotetabs=False, istext=True, header=False)[:-2]
    lines = encoded.split(b"\r\n")
    if len(lines[-1]) < _LINE and max(map(len, lines)) <= _LINE:
        return encoded
    # b2a_qp can write 77+ characters when a line ends with white space (encoded as =20), and
    # the last line needs room for the "=" of a soft line break
    fixed: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        limit = _LINE - 1 if number == len(lines) else _LINE
        while len(line) > limit:
            cut = _LINE - 1
            if line[cut - 1] == _EQUALS:  # never inside an =XX escape
                cut -= 1
            elif line[cut - 2] == _EQUALS:
                cut -= 2
            fixed.append(line[:cut] + b"=")
            line = line[cut:]
        fixed.append(line)
    return b"\r\n".join(fixed)


def base64_body(text: str) -> bytes:
    data = crlf(text).encode("utf-8")
    encoded = b2a_base64(data, newline=False)
    lines = [encoded[i : i + _LINE] for i in range(0, len(encoded), _LINE)]
    return b"\r\n".join(lines) + b"\r\n"


def mostly_non_ascii(text: str) -> bool:
    """More than a sixth of the UTF-8 bytes non-ASCII: base64 is then smaller than QP."""
    data = text.encode("utf-8")
    return len(data.translate(None, _ASCII)) * 6 > len(data)


class BodyEncoder:
    """Encodes the body of one part from the pieces its template yielded.

    ``constants`` is the static text of the template; their encoding is computed here, once.
    Quoted-printable, unless ``use_base64`` (chosen per campaign for mostly non-ASCII text:
    Cyrillic, Greek, CJK...). The result is 7-bit, CRLF, lines of at most 76 characters, and
    ends with CRLF.
    """

    __slots__ = ("_cache", "use_base64")

    def __init__(self, constants: Iterable[str], *, use_base64: bool) -> None:
        self.use_base64 = use_base64
        self._cache: dict[str, bytes] = (
            {}
            if use_base64
            else {
                text: qp_segment(crlf(text).encode("utf-8"))
                for text in constants
                if len(text) >= _MIN_CACHED
            }
        )

    def encode(self, pieces: list[str]) -> bytes:
        if self.use_base64:
            return base64_body("".join(pieces))
        cache = self._cache
        segments: list[bytes] = []
        pending: list[str] = []
        for piece in pieces:
            encoded = cache.get(piece)
            if encoded is None:
                pending.append(piece)
                continue
            if pending:
                _encode_pending(pending, segments)
            segments.append(encoded)
        if pending:
            _encode_pending(pending, segments)
        body = _SOFT_BREAK.join(segments)
        return body if body.endswith(b"\n") else body + b"\r\n"


def _encode_pending(pending: list[str], segments: list[bytes]) -> None:
    text = "".join(pending)
    pending.clear()
    if text:
        segments.append(qp_segment(crlf(text).encode("utf-8")))


@dataclass(frozen=True)
class Skeleton:
    """The fixed bytes around the two bodies; ``[0]`` is quoted-printable, ``[1]`` base64."""

    content_type: bytes  # the top-level Content-Type line and the blank line after the headers
    text_head: tuple[bytes, bytes]  # delimiter + part headers of the text part
    html_head: tuple[bytes, bytes]  # line break, delimiter + part headers of the html part
    end: bytes  # line break + closing delimiter

    @classmethod
    def build(cls, boundary: str) -> Skeleton:
        def part(content_type: str) -> tuple[bytes, bytes]:
            head = (
                f"--{boundary}\r\nContent-Type: {content_type}; charset=utf-8\r\n"
                "Content-Transfer-Encoding: "
            )
            return (
                f"{head}quoted-printable\r\n\r\n".encode("ascii"),
                f"{head}base64\r\n\r\n".encode("ascii"),
            )

        html_qp, html_b64 = part("text/html")
        return cls(
            content_type=(
                f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
            ).encode("ascii"),
            text_head=part("text/plain"),
            html_head=(b"\r\n" + html_qp, b"\r\n" + html_b64),
            end=f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
