"""RFC 5965 Abuse Reporting Format (feedback loop complaints)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .addresses import extract_address
from .context import MessageContext
from .mime import get_header

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Complaint:
    recipients: tuple[str, ...]
    feedback_type: str | None


def is_arf(ctx: MessageContext) -> bool:
    if ctx.report_type in ("feedback-report",) or ctx.feedback_reports:
        return True
    # Some providers send the report fields as text/plain in a multipart/report.
    return ctx.content_type == "multipart/report" and bool(
        re.search(r"^feedback-type\s*:", ctx.full_text, re.I | re.M)
        and re.search(r"^user-agent\s*:", ctx.full_text, re.I | re.M)
    )


def parse_complaint(ctx: MessageContext) -> Complaint:
    fields: dict[str, list[str]] = {}
    for text in [*ctx.feedback_reports, ctx.full_text]:
        for match in _FIELD_RE.finditer(text):
            fields.setdefault(match.group(1).lower(), []).append(match.group(2).strip())
    recipients: list[str] = []
    for value in fields.get("original-rcpt-to", []):
        address = extract_address(value)
        if address and address not in recipients:
            recipients.append(address)
    if not recipients and ctx.original is not None:
        address = extract_address(get_header(ctx.original, "to"))
        if address:
            recipients.append(address)
    types = fields.get("feedback-type") or []
    feedback_type = types[0] if types else None
    return Complaint(tuple(recipients), feedback_type.lower() if feedback_type else None)
