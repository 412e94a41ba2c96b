"""One SMTP transaction (MAIL, RCPT, DATA) on an aiosmtplib connection, for a rendered email.

`aiosmtplib.SMTP.sendmail` parses the sender and the recipient with `email.utils.parseaddr`
twice each and normalizes the message's line endings for its SIZE before `data` does it
again: about a quarter of the sender's CPU per message (py-spy, docs/PERFORMANCE.md). Our
envelope addresses are plain (a VERP return path we made, an item's address); such an
address is written as it is, and anything else goes through aiosmtplib's own quoting,
which also refuses what cannot be put on a command line. The commands and the DATA phase
are aiosmtplib's (`execute_command`, `data`): timeouts, dot-stuffing and a lost connection
behave as they do in `sendmail`. A refusal leaves the transaction open: the caller resets
it (RSET) or drops the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.email import quote_address

MAIL_OK = 250
RCPT_OK = frozenset({250, 251})

# a dot-atom local part and a domain of letters, digits, hyphens and dots: parseaddr gives
# such an address back unchanged (tests/unit/test_smtp_transaction.py compares them)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def envelope_address(address: str) -> bytes:
    """`<address>` for MAIL FROM / RCPT TO; ValueError for an address that cannot be sent
    (aiosmtplib's check), UnicodeEncodeError for one that is not ASCII."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def wire_size(message: bytes) -> int:
    """The message's size as DATA sends it (RFC 1870: CRLF line ends, a final CRLF)."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:
        return len(message) + (0 if message.endswith(b"\r\n") else 2)
    return len(aiosmtplib.protocol.normalize_message_line_endings(message))


@dataclass(frozen=True)
class Reply:
    """The reply that ended the transaction: the reply to the message when accepted, else
    the refusal (of MAIL, RCPT or DATA)."""

    code: int
    message: str
    accepted: bool


async def ensure_greeted(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO for a server without it) if the connection has not said hello yet."""
    if not client.is_ehlo_or_helo_needed:
        return
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def send_message(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes
) -> Reply:
    """MAIL, RCPT and DATA for one recipient on a greeted connection (`ensure_greeted`).
    Raises ValueError before anything is sent for an address that cannot be sent, and
    aiosmtplib's errors for a lost connection or a timeout (it then closes the connection)."""
    mail_from = envelope_address(sender)
    rcpt_to = envelope_address(recipient)
    options = [f"SIZE={wire_size(message)}".encode("ascii")]
    if not client.supports_extension("size"):
        options = []
    reply = await client.execute_command(b"MAIL", b"FROM:" + mail_from, *options)
    if reply.code != MAIL_OK:
        return Reply(reply.code, reply.message, False)
    reply = await client.execute_command(b"RCPT", b"TO:" + rcpt_to)
    if reply.code not in RCPT_OK:
        return Reply(reply.code, reply.message, False)
    try:
        reply = await client.data(message)
    except aiosmtplib.SMTPDataError as refused:
        return Reply(refused.code, refused.message, False)
    return Reply(reply.code, reply.message, True)
