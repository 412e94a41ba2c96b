"""DKIM keys of a test domain and a verifier that is not ours: dkimpy, with the DNS answers
given in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import dkim
from mailroom_common.dkim_signing import dns_record_value, new_private_key

DOMAIN = "mailroom.test"
RSA_SELECTOR = "mr1"
ED25519_SELECTOR = "mr1e"


@dataclass
class PublishedKeys:
    """Private keys and the TXT records published for them (selector -> record value)."""

    rsa_pem: str = field(default_factory=lambda: new_private_key("rsa-sha256"))
    ed25519_pem: str = field(default_factory=lambda: new_private_key("ed25519-sha256"))
    extra: dict[str, str] = field(default_factory=dict)

    @cached_property
    def records(self) -> dict[bytes, bytes]:
        published = {
            RSA_SELECTOR: dns_record_value(self.rsa_pem),
            ED25519_SELECTOR: dns_record_value(self.ed25519_pem),
            **self.extra,
        }
        return {
            f"{selector}._domainkey.{DOMAIN}.".encode(): value.encode()
            for selector, value in published.items()
        }

    def smtp_settings(self) -> dict[str, str]:
        """The smtp group's DKIM settings that sign with both keys."""
        return {
            "dkim_domain": DOMAIN,
            "dkim_selector": RSA_SELECTOR,
            "dkim_private_key": self.rsa_pem,
            "dkim_ed25519_selector": ED25519_SELECTOR,
            "dkim_ed25519_private_key": self.ed25519_pem,
        }

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name if name.endswith(b".") else name + b".")

    def verify(self, message: bytes) -> list[bool]:
        """dkimpy's verdict on each DKIM-Signature of the message, in order."""
        checker = dkim.DKIM(message)
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        return [self._verified(checker, index) for index in range(count)]

    def _verified(self, checker: dkim.DKIM, index: int) -> bool:
        try:
            return bool(checker.verify(idx=index, dnsfunc=self.dns))
        except dkim.DKIMException:  # what dkim.verify() turns into False
            return False


def signature_tags(message: bytes, index: int = 0) -> dict[str, str]:
    """The tags of a message's DKIM-Signature header (whitespace removed)."""
    checker = dkim.DKIM(message)
    headers = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    text = b"".join(headers[index].split()).decode()
    return dict(tag.split("=", 1) for tag in text.split(";") if tag)
