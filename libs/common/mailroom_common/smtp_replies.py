"""SMTP server replies made safe to store, log and publish.

A server may echo what it was sent (a misconfigured relay answers `500 unrecognized command:
AUTH PLAIN AGFsaWNlAHMzY3JldA==`), so a reply can carry the account's password in plain
text or base64 (AUTH PLAIN, AUTH LOGIN), and anything at all: CR/LF, NUL, megabytes. What
leaves `scrub_reply` is one line of printable text, bounded, with every form of the
credentials masked.
"""

from __future__ import annotations

import base64
import binascii
import re

MASK = "********"
MAX_REPLY_CHARS = 1000
# work on at most this much of a reply: enough to find a secret that would be kept
MAX_INPUT_CHARS = 4 * MAX_REPLY_CHARS

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s{2,}")
# what follows AUTH (mechanism, then the initial response or a challenge answer)
_AUTH_ARGUMENT = re.compile(r"(\bAUTH\s+[A-Za-z0-9_-]+)\s+\S+", re.IGNORECASE)
_AUTH_LINE = re.compile(r"(\bAUTH\b[=:]?)\s*[A-Za-z0-9+/=]{8,}", re.IGNORECASE)
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


def _b64(data: str) -> list[str]:
    encoded = base64.b64encode(data.encode("utf-8", "surrogatepass")).decode("ascii")
    return [encoded, encoded.rstrip("=")]


class ReplyScrubber:
    """Scrubs replies of one account's credentials (username and password)."""

    def __init__(self, username: str = "", password: str = "") -> None:
        self.password = password
        secrets: set[str] = set()
        if password:
            secrets.add(password)
            secrets.update(_b64(password))
            for authzid in ("", username):
                secrets.update(_b64(f"{authzid}\0{username}\0{password}"))
            if username:
                secrets.add(f"{username}:{password}")
                secrets.update(_b64(f"{username}:{password}"))
        # longest first, so a base64 form is masked whole before a part of it matches
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return self.scrub(text)

    def scrub(self, text: str) -> str:
        text = self._mask_secrets(str(text)[:MAX_INPUT_CHARS])
        text = _CONTROL.sub(" ", text)
        text = self._mask_secrets(text)  # a password split by a line break before
        text = _AUTH_ARGUMENT.sub(rf"\1 {MASK}", text)
        text = _AUTH_LINE.sub(rf"\1 {MASK}", text)
        text = _BASE64_WORD.sub(self._mask_credential_blob, text)
        text = _SPACES.sub(" ", text).strip()
        if len(text) > MAX_REPLY_CHARS:
            text = text[: MAX_REPLY_CHARS - 1] + "…"
        return text

    def _mask_secrets(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _mask_credential_blob(self, match: re.Match[str]) -> str:
        """A base64 word that decodes to an AUTH PLAIN response (NUL-separated) or to
        something holding the password is masked, whatever its framing."""
        word = match.group(0)
        try:
            decoded = base64.b64decode(word + "=" * (-len(word) % 4), validate=True)
        except (binascii.Error, ValueError):
            return word
        if b"\0" in decoded:
            return MASK
        if self.password and self.password.encode("utf-8", "surrogatepass") in decoded:
            return MASK
        return word


def scrub_reply(text: str, username: str = "", password: str = "") -> str:
    """`text` as one bounded line without the account's credentials in any form."""
    return ReplyScrubber(username, password).scrub(text)
