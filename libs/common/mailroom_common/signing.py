"""HMAC signatures: the footer's links, the VERP return path, Message-IDs.

Tokens are `<payload>.<mac>` in URL-safe base64 without padding; the payload names the
contact, the message source (campaign "c<id>" or autoresponder "a<id>") and the purpose.
Verification is constant-time and accepts the previous key too, so keys can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["unsubscribe", "manage"]

MAX_TOKEN_CHARS = 512
"""Far longer than any token we sign (about 60 characters); longer input is refused unread."""
MAX_ADDRESS_CHARS = 320
_B64_TEXT = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_PAYLOAD = re.compile(r"([0-9]{1,19}):([ca][0-9]{1,19}):(unsubscribe|manage)", re.ASCII)
# an item reference: "123" (a campaign item) or "a123" (an autoresponder item)
ITEM_REF = re.compile(r"a?[0-9]{1,19}", re.ASCII)
_VERP_LOCAL = re.compile(r"bounces\+(a?[0-9]{1,19})-([a-z2-7]{13})", re.ASCII)
_MESSAGE_ID = re.compile(
    r"<?([ca][0-9]{1,19})\.(a?[0-9]{1,19})\.([A-Za-z0-9_-]{8})@[A-Za-z0-9.-]{1,253}>?", re.ASCII
)


class InvalidToken(ValueError):
    """A token that is malformed, tampered with or signed by an unknown key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict: only the URL-safe alphabet, and only the canonical encoding."""
    if not _B64_TEXT.fullmatch(text):
        raise InvalidToken("not URL-safe base64")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as error:
        raise InvalidToken("not URL-safe base64") from error
    if _b64(data) != text:
        raise InvalidToken("not the canonical encoding")
    return data


def _b32(mac: bytes) -> str:
    return base64.b32encode(mac).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True)
class LinkClaims:
    contact_id: int
    source: str  # "c<campaign id>" or "a<autoresponder id>"
    purpose: Purpose


class Signer:
    def __init__(self, key: bytes, previous_key: bytes | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self._keys = [key] + ([previous_key] if previous_key else [])

    def _mac(self, key: bytes, message: bytes, size: int) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()[:size]

    def link_token(self, contact_id: int, source: str, purpose: Purpose) -> str:
        payload = f"{contact_id}:{source}:{purpose}".encode("ascii")
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], payload, 16))}"

    def verify_link_token(self, token: str) -> LinkClaims:
        """The claims of a token we signed (current or previous key); InvalidToken for
        anything else, however malformed: never another exception."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("malformed token")
        payload_b64, dot, mac_b64 = token.partition(".")
        if not dot:
            raise InvalidToken("malformed token")
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(self._mac(key, payload, 16), mac)
        if not valid:
            raise InvalidToken("bad signature")
        fields = _PAYLOAD.fullmatch(payload.decode("ascii", "replace"))
        if fields is None:
            raise InvalidToken("malformed payload")
        contact, source, purpose = fields.groups()
        return LinkClaims(int(contact), source, purpose)  # type: ignore[arg-type]

    def verp_signature(self, item_ref: str) -> str:
        return _b32(self._mac(self._keys[0], f"verp:{item_ref}".encode(), 8))

    def verp_address(self, item_ref: str, bounce_domain: str) -> str:
        """bounces+<item>-<signature>@<bounce domain>; item_ref is "123" or "a123"."""
        return f"bounces+{item_ref}-{self.verp_signature(item_ref)}@{bounce_domain}"

    def verify_verp_address(self, address: str) -> str | None:
        """The item reference of a VERP address we signed (current or previous key), else
        None: also for anything malformed (non-ASCII, over-long, empty), never an error."""
        if not isinstance(address, str) or len(address) > MAX_ADDRESS_CHARS:
            return None
        local = address.strip().strip("<>").partition("@")[0]
        if not local.isascii():
            return None
        found = _VERP_LOCAL.fullmatch(local.lower())
        if found is None:
            return None
        item_ref, signature = found.groups()
        for key in self._keys:
            expected = _b32(self._mac(key, f"verp:{item_ref}".encode(), 8))
            if hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
                return item_ref
        return None

    def _message_id_tag(self, key: bytes, item_ref: str, source: str) -> str:
        return _b64(self._mac(key, f"mid:{source}:{item_ref}".encode(), 6))

    def message_id(self, item_ref: str, source: str, domain: str) -> str:
        """Deterministic: the same item always gets the same Message-ID."""
        tag = self._message_id_tag(self._keys[0], item_ref, source)
        return f"<{source}.{item_ref}.{tag}@{domain}>"

    def verify_message_id(self, message_id: str) -> tuple[str, str] | None:
        """(source, item reference) of a Message-ID we made (current or previous key), else
        None: also for anything malformed, never an error."""
        if not isinstance(message_id, str) or len(message_id) > MAX_ADDRESS_CHARS:
            return None
        found = _MESSAGE_ID.fullmatch(message_id.strip())
        if found is None:
            return None
        source, item_ref, tag = found.groups()
        for key in self._keys:
            expected = self._message_id_tag(key, item_ref, source)
            if hmac.compare_digest(expected.encode("ascii"), tag.encode("ascii")):
                return source, item_ref
        return None
