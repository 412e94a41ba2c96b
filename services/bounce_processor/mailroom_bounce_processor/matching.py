"""What one message from the bounce mailbox is: the parser's report, whether it could be read
at all, and the campaign item the signed evidence (VERP address, Message-ID) points to.

Pure logic, no I/O: the CLI's `mailroom bounce parse` uses it too."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from typing import Any, Literal

from mailroom_common.signing import Signer

from mailroom_bounce_processor.parser import BounceReport, parse_bounce

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
"""A bounce is small; a larger message that is no bounce is kept as unparsed."""
MAX_NESTING = 40
"""Deeper message/rfc822 (or multipart) nesting than this is malformed."""
HEAD_BYTES = 16 * 1024
"""How much of an unparsed message is kept for a person to look at."""

_ENVELOPE_HEADERS = ("x-original-to", "delivered-to", "envelope-to", "x-envelope-to", "to")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class SignedMatch:
    item_ref: str
    # "recipient": an authenticated provider's event about an address we sent to lately
    matched_by: Literal["verp", "message_id", "recipient"]


@dataclass(frozen=True)
class Analysis:
    digest: str
    size: int
    report: BounceReport
    headers: dict[str, str]  # a summary of the bounce's own headers
    unreadable: str | None  # why a person should look at it, when it is no usable bounce


def header_block(raw: bytes) -> bytes:
    match = _HEADER_END.search(raw, 0, 1024 * 1024)
    return raw[: match.start()] if match else raw[:HEAD_BYTES]


def _headers(raw: bytes) -> Message:
    return BytesHeaderParser(policy=policy.compat32).parsebytes(header_block(raw))


def header_summary(raw: bytes, limit: int = 40) -> dict[str, str]:
    """The message's own headers (first `limit`, values cut at 500 characters)."""
    summary: dict[str, str] = {}
    try:
        parsed = _headers(raw)
        for name, value in list(parsed.items())[:limit]:
            text = str(value).replace("\x00", "")[:500]
            summary[name] = f"{summary[name]}\n{text}" if name in summary else text
    except Exception as error:  # a summary is best effort
        summary["x-mailroom-error"] = f"headers unreadable: {type(error).__name__}"
    return summary


def envelope_addresses(raw: bytes) -> list[str]:
    """Where the bounce was delivered to (a VERP return path, when it is ours)."""
    try:
        parsed = _headers(raw)
    except Exception:
        return []
    found: list[str] = []
    for name in _ENVELOPE_HEADERS:
        values = [str(v) for v in parsed.get_all(name) or []]
        found.extend(address for _, address in getaddresses(values) if address)
    return found


def signed_match(report: BounceReport, raw: bytes, signer: Signer) -> SignedMatch | None:
    """The item named by evidence only we can produce: a VERP address signed with the
    deployment's key (current or previous), or the returned original's Message-ID with its
    HMAC tag. Nothing else is proof: not the recipient's address, not X-Mailroom-Item."""
    candidates = [report.verp_address] if report.verp_address else []
    candidates += envelope_addresses(raw)
    for address in candidates:
        ref = signer.verify_verp_address(address)
        if ref is not None:
            return SignedMatch(ref, "verp")
    message_id = report.original_message_id or report.original_headers.get("Message-ID")
    if message_id:
        verified = signer.verify_message_id(message_id)
        if verified is not None:
            return SignedMatch(verified[1], "message_id")
    return None


def provider_signed_match(
    return_path: str | None, message_id: str | None, signer: Signer
) -> SignedMatch | None:
    """A provider event's item named by our own signed evidence: the envelope sender (our
    VERP address) or the Message-ID header, when the provider passes them on."""
    if return_path:
        ref = signer.verify_verp_address(return_path)
        if ref is not None:
            return SignedMatch(ref, "verp")
    if message_id:
        verified = signer.verify_message_id(message_id)
        if verified is not None:
            return SignedMatch(verified[1], "message_id")
    return None


def _structure_problem(raw: bytes) -> str | None:
    message = BytesParser(policy=policy.compat32).parsebytes(raw[: 4 * 1024 * 1024])
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if depth > MAX_NESTING:
            return f"MIME parts nested deeper than {MAX_NESTING} levels"
        if seen > 2000:
            return "more than 2000 MIME parts"
        defects = [type(d).__name__ for d in part.defects]
        if defects:
            return f"broken MIME: {', '.join(sorted(set(defects)))}"
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return None


def _undeclared_8bit(raw: bytes) -> str | None:
    head = header_block(raw)
    if any(b > 0x7F for b in head):
        return "undeclared 8-bit bytes in the headers"
    body = raw[len(head) : len(head) + 4 * 1024 * 1024]
    declared = re.search(rb"content-transfer-encoding:\s*(8bit|binary)", raw[: 1024 * 1024], re.I)
    if declared is None and re.search(rb"[\x80-\xff]", body):
        return "undeclared 8-bit bytes in the body"
    return None


def unreadable_reason(raw: bytes, report: BounceReport) -> str | None:
    """Why a message the parser did not take for a bounce deserves a person's look: it is
    malformed, not simply some other mail (an auto-reply, spam)."""
    if report.reason.startswith(("unparseable", "parser error", "not bytes")):
        return report.reason
    if report.is_bounce or report.kind == "complaint":
        if not report.recipients and not (report.verp_address or report.original_message_id):
            return "a bounce that names no recipient"
        return None
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"too large: {len(raw)} bytes (no bounce over {MAX_MESSAGE_BYTES} bytes is read)"
    try:
        problem = _structure_problem(raw)
    except (Exception, RecursionError) as error:
        return f"unreadable MIME: {type(error).__name__}"
    return problem or _undeclared_8bit(raw)


def analyse(raw: bytes) -> Analysis:
    """Parse one message (CPU work: callers run it in a thread)."""
    report = parse_bounce(raw)
    try:
        unreadable = unreadable_reason(raw, report)
    except (Exception, RecursionError) as error:  # never stop on a message
        unreadable = f"unreadable: {type(error).__name__}"
    return Analysis(
        digest=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        report=report,
        headers=header_summary(raw),
        unreadable=unreadable,
    )


def describe(name: str, raw: bytes, signer: Signer) -> dict[str, Any]:
    """One line of `mailroom bounce parse`."""
    report = parse_bounce(raw)
    match = signed_match(report, raw, signer)
    return {
        "file": name,
        "is_bounce": report.is_bounce,
        "recipients": [r.address for r in report.recipients],
        "kind": report.kind,
        "action": report.action,
        "status": report.status,
        # a campaign item as a number, an autoresponder item as "a<id>"
        "item_id": (int(match.item_ref) if match.item_ref.isdigit() else match.item_ref)
        if match
        else None,
    }
