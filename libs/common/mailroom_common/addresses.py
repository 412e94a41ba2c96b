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

from email_validator import EmailNotValidError, validate_email

from mailroom_common.rendering.headers import valid_address

MAX_LOCAL_PART = 64
MAX_ADDRESS = 254


class AddressProblem(ValueError):
    """The address cannot be a recipient; the message says why, for a person."""


def checked_address(value: str) -> str:
    """`value` as it is to be stored and sent to, or AddressProblem saying why it can't be."""
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        reason = str(error)
        if "before the @-sign are not supported" in reason:
            reason += " Mailroom sends without SMTPUTF8: use the contact's ASCII address."
        raise AddressProblem(reason) from None
    address = result.ascii_email or result.normalized
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
