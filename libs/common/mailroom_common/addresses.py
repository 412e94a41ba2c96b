"""The one check of a recipient's address, wherever a contact enters (CSV import, subscribe).

Mailroom sends without SMTPUTF8, so what is stored must be a plain ASCII address the
renderer accepts (`rendering.headers.valid_address`):

- a non-ASCII domain (IDN) is kept in its ASCII form (IDNA, "xn--..."): every server takes it;
- a non-ASCII local part (`jürgen@...`) is refused, with the reason;
- so are display names (`Name <a@b>`), quoted local parts, domain literals, line breaks,
  special-use domains (`.test`, `.invalid`, `.local`, `.localhost`, `.onion`, `.arpa`), and
  addresses over the lengths of RFC 5321 (64 before the @-sign, 254 in all).
"""

from __future__ import annotations

import re

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from mailroom_common.rendering.headers import valid_address

MAX_LOCAL_PART = 64
MAX_ADDRESS = 254


# The fast path: a plain ASCII dot-atom, one @-sign, a domain of letters, digits and single
# hyphens ending in a label of letters. email-validator accepts every such address, and
# its answer is the address with the domain in lower case; anything else (an error, an
# IDN, punycode, a role mailbox it lower-cases, a special-use domain, an address near a
# length limit) goes the slow way, so both give the same answer and the same reason.
_PLAIN = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_SPECIAL_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_SUFFIXES = tuple("." + name for name in SPECIAL_USE_DOMAIN_NAMES)


class AddressProblem(ValueError):
    """The address cannot be a recipient; the message says why, for a person."""


def plain_address(value: str) -> str | None:
    """What email-validator would return for a plain ASCII address, or None: ask it."""
    match = _PLAIN.fullmatch(value)
    if match is None or len(value) > MAX_ADDRESS:
        return None
    local, domain = match.groups()
    domain = domain.lower()
    if (
        len(local) > MAX_LOCAL_PART
        or "--" in domain
        or domain in _SPECIAL_DOMAINS
        or domain.endswith(_SPECIAL_SUFFIXES)
        or local.lower() in _ROLE_MAILBOXES
    ):
        return None
    return f"{local}@{domain}"


def validated_address(value: str) -> str:
    """email-validator's answer (the slow path, for every address)."""
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        reason = str(error)
        if "before the @-sign are not supported" in reason:
            reason += " Mailroom sends without SMTPUTF8: use the contact's ASCII address."
        raise AddressProblem(reason) from None
    return result.ascii_email or result.normalized


def check_sender(value: str) -> None:
    """AddressProblem unless `value` can be a From or Reply-To address: plain ASCII (no
    SMTPUTF8), no display name, a domain with a dot, not special-use but `.test`."""
    try:
        validate_email(
            value, check_deliverability=False, allow_smtputf8=False, test_environment=True
        )
    except EmailNotValidError as error:
        raise AddressProblem(str(error)) from None


def checked_address(value: str) -> str:
    """`value` as it is to be stored and sent to, or AddressProblem saying why it can't be."""
    address = plain_address(value) or validated_address(value)
    local = address.rpartition("@")[0]
    if len(local) > MAX_LOCAL_PART:
        raise AddressProblem(
            f"The part before the @-sign is {len(local)} characters long;"
            f" the limit is {MAX_LOCAL_PART}."
        )
    if len(address) > MAX_ADDRESS:
        raise AddressProblem(
            f"The address is {len(address)} characters long; the limit is {MAX_ADDRESS}."
        )
    if not valid_address(address):  # never expected: the two checks must agree
        raise AddressProblem("The address is not one Mailroom can send to.")
    return address
