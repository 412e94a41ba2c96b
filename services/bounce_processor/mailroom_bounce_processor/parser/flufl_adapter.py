"""flufl.bounce's detectors (GNU Mailman), run defensively."""

from __future__ import annotations

import logging
from email.message import Message

from flufl.bounce import all_failures

from .addresses import extract_address

_log = logging.getLogger(__name__)
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def _decode(addresses: frozenset[bytes]) -> set[str]:
    result: set[str] = set()
    for raw in addresses:
        try:
            text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            continue
        address = extract_address(text)
        if address and not any(c in address for c in '"{}[]:,'):
            result.add(address)
    return result


def flufl_failures(msg: Message) -> tuple[set[str], set[str]]:
    """(temporary, permanent) addresses found by flufl.bounce; empty on any error."""
    try:
        temporary, permanent = all_failures(msg)
    except (Exception, RecursionError):
        _log.debug("flufl.bounce failed", exc_info=True)
        return set(), set()
    perm = _decode(permanent)
    return _decode(temporary) - perm, perm
