"""HMAC signatures: the footer's links, the VERP return path, Message-IDs.

Tokens are `<payload>.<mac>` in URL-safe base64 without padding; the payload names the
contact, the message source (campaign "c<id>" or autoresponder "a<id>") and the purpose.
Verification is constant-time and accepts the previous key too, so keys can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["unsubscribe", "manage"]
_PURPOSES: frozenset[str] = frozenset(("unsubscribe", "manage"))


class InvalidToken(ValueError):
    """A token that is malformed, tampered with or signed by an unknown key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        try:
            payload_b64, mac_b64 = token.split(".")
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except ValueError as error:
            raise InvalidToken("malformed token") from error
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(self._mac(key, payload, 16), mac)
        if not valid:
            raise InvalidToken("bad signature")
        try:
            contact, source, purpose = payload.decode("ascii").split(":")
            if purpose not in _PURPOSES:
                raise ValueError(purpose)
            return LinkClaims(int(contact), source, purpose)  # type: ignore[arg-type]
        except ValueError as error:
            raise InvalidToken("malformed payload") from error

    def verp_signature(self, item_ref: str) -> str:
        mac = self._mac(self._keys[0], f"verp:{item_ref}".encode(), 8)
        return base64.b32encode(mac).decode("ascii").rstrip("=").lower()

    def verp_address(self, item_ref: str, bounce_domain: str) -> str:
        """bounces+<item>-<signature>@<bounce domain>; item_ref is "123" or "a123"."""
        return f"bounces+{item_ref}-{self.verp_signature(item_ref)}@{bounce_domain}"

    def verify_verp_address(self, address: str) -> str | None:
        """The item reference of a VERP address we signed, else None."""
        local, _, _domain = address.strip("<>").partition("@")
        tag, plus, rest = local.partition("+")
        if not plus or tag.lower() != "bounces":
            return None
        item_ref, dash, signature = rest.rpartition("-")
        if not dash or not item_ref:
            return None
        for key in self._keys:
            expected = (
                base64.b32encode(self._mac(key, f"verp:{item_ref}".encode(), 8))
                .decode("ascii")
                .rstrip("=")
                .lower()
            )
            if hmac.compare_digest(expected, signature.lower()):
                return item_ref
        return None

    def message_id(self, item_ref: str, source: str, domain: str) -> str:
        """Deterministic: the same item always gets the same Message-ID."""
        tag = _b64(self._mac(self._keys[0], f"mid:{source}:{item_ref}".encode(), 6))
        return f"<{source}.{item_ref}.{tag}@{domain}>"
