"""Bounce-message parsing: RFC 3464 DSNs, non-standard MTA bounces, auto-replies, ARF.

Pure logic, no I/O::

    from mailroom_bounce_processor.parser import parse_bounce

    report = parse_bounce(raw_bytes)
    if report.is_bounce and report.kind == "hard":
        ...
"""

from .classify import parse_bounce
from .models import BouncedRecipient, BounceReport, UnparseableMessage

__all__ = ["BounceReport", "BouncedRecipient", "UnparseableMessage", "parse_bounce"]
