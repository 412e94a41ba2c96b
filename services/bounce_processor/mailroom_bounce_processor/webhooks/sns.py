"""Amazon SNS messages (how SES reports bounces and complaints): signature and certificate.

A message is believed only when:
- its TopicArn is one of the settings' `ses_topic_arns` (checked first: nothing is fetched
  for a topic that is not ours);
- its Timestamp is within the replay window;
- its SigningCertURL is https on a host `sns.<region>.amazonaws.com` (no port, no user, a
  `.pem` path): only then is the certificate fetched (and kept, by URL), and the TLS
  connection to AWS is what vouches for it (the file holds the leaf alone, no chain);
- the certificate is valid now, names SNS (`sns.amazonaws.com`) and holds an RSA key of at
  least 2048 bits;
- the Signature verifies (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over the
  canonical string of the documented fields, in their documented order.

A SubscriptionConfirmation is confirmed by a GET of its SubscribeURL, itself required to be
https on an SNS host. Fetching goes through a `Fetch` so tests never use the network.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailroom_bounce_processor.webhooks.events import Refused, check_fresh

Fetch = Callable[[str], Awaitable[bytes]]
"""GET an https URL, return its body (raise on any failure)."""

_SNS_HOST = re.compile(r"sns\.[a-z]{2}(-[a-z]+)+-[0-9]{1,2}\.amazonaws\.com", re.ASCII)
SNS_CERT_NAME = "sns.amazonaws.com"
MAX_CERTIFICATES = 32
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def is_sns_url(url: object) -> bool:
    """https://sns.<region>.amazonaws.com/..., nothing else (no port, no user, no tricks)."""
    if not isinstance(url, str) or len(url) > 2000 or not url.isascii():
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port is None
        and parts.username is None
        and parts.password is None
        and "@" not in parts.netloc
        and _SNS_HOST.fullmatch(parts.netloc) is not None
    )


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signs: "Name\\nvalue\\n" for each documented field it carries."""
    lines: list[str] = []
    for name in _SIGNED_FIELDS[message["Type"]]:
        value = message.get(name)
        if value is None and name == "Subject":
            continue  # a Notification without a Subject leaves it out
        if not isinstance(value, str):
            raise Refused(400, "malformed", f"SNS message without a string {name}")
        lines += [name, value]
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_timestamp(value: object) -> float:
    if not isinstance(value, str) or len(value) > 40:
        raise Refused(400, "malformed", "SNS message without a Timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(400, "malformed", "SNS Timestamp is not ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _names_sns(certificate: x509.Certificate) -> bool:
    names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        alternatives = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        alternatives = []
    return any(
        n == SNS_CERT_NAME or (isinstance(n, str) and _SNS_HOST.fullmatch(n))
        for n in [*names, *alternatives]
    )


def signing_key(pem: bytes, now: float) -> tuple[rsa.RSAPublicKey, float]:
    """The RSA key of an SNS signing certificate and when it expires (unix seconds), or
    Refused when it is not one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Refused(
            403, "bad_certificate", "the signing certificate is not a PEM certificate"
        ) from None
    moment = datetime.fromtimestamp(now, UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise Refused(403, "bad_certificate", "the signing certificate is not valid now")
    if not _names_sns(certificate):
        raise Refused(403, "bad_certificate", "the signing certificate does not name SNS")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise Refused(403, "bad_certificate", "the signing certificate has no RSA-2048 key")
    return key, certificate.not_valid_after_utc.timestamp()


class SnsVerifier:
    """Verifies SNS messages; keeps the certificates it fetched (by URL, until they expire)."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] = time.time) -> None:
        self.fetch = fetch
        self.clock = clock
        self._keys: OrderedDict[str, tuple[rsa.RSAPublicKey, float]] = OrderedDict()

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        kept = self._keys.get(url)
        if kept is not None and kept[1] > self.clock():
            self._keys.move_to_end(url)
            return kept[0]
        try:
            pem = await self.fetch(url)
        except Exception as error:
            raise Refused(
                403,
                "certificate_unavailable",
                f"the signing certificate could not be fetched: {error}"[:300],
            ) from None
        key, expires = signing_key(pem, self.clock())
        self._keys[url] = (key, expires)
        while len(self._keys) > MAX_CERTIFICATES:
            self._keys.popitem(last=False)
        return key

    async def verify(self, message: dict[str, Any], topics: list[str]) -> None:
        """Return when the message is authentic and for one of `topics`; else Refused."""
        kind = message.get("Type")
        if kind not in TYPES:
            raise Refused(400, "malformed", "not an SNS message (Type)")
        if message.get("TopicArn") not in topics:
            raise Refused(403, "unknown_topic", "TopicArn is not one of ses_topic_arns")
        version = message.get("SignatureVersion")
        if version not in _HASHES:
            raise Refused(403, "bad_signature", "SignatureVersion must be 1 or 2")
        url = message.get("SigningCertURL")
        if not is_sns_url(url) or not str(url).endswith(".pem"):
            raise Refused(
                403,
                "bad_certificate",
                "SigningCertURL is not https on an sns.<region>.amazonaws.com host",
            )
        check_fresh(parse_timestamp(message.get("Timestamp")), self.clock(), "the SNS Timestamp")
        signature = message.get("Signature")
        if not isinstance(signature, str) or not signature:
            raise Refused(403, "unsigned", "the SNS message is not signed (Signature)")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(403, "bad_signature", "the SNS Signature is not base64") from None
        signed = canonical_string(message)
        key = await self._key(str(url))
        try:
            key.verify(raw_signature, signed, padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise Refused(403, "bad_signature", "the SNS signature does not verify") from None

    async def confirm(self, message: dict[str, Any]) -> None:
        """Confirm a (verified) SubscriptionConfirmation: GET its SubscribeURL."""
        url = message.get("SubscribeURL")
        if not is_sns_url(url):
            raise Refused(403, "bad_subscribe_url", "SubscribeURL is not https on an SNS host")
        try:
            await self.fetch(str(url))
        except Exception as error:
            raise Refused(
                502, "confirm_failed", f"confirming the subscription failed: {error}"[:300]
            ) from None
