"""Result types of the bounce parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

HARD = "hard"
SOFT = "soft"
COMPLAINT = "complaint"
FAILED = "failed"
DELAYED = "delayed"


class UnparseableMessage(ValueError):
    """Raised only for input that is not a message at all (e.g. not bytes).

    :func:`parse_bounce` itself never raises it for byte input; any byte string,
    however broken, yields a :class:`BounceReport` (``is_bounce=False`` with a
    reason when nothing can be read from it).
    """


@dataclass(frozen=True)
class BouncedRecipient:
    """One recipient that a bounce reports as failed or delayed."""

    address: str
    """The recipient address, lower-cased."""
    action: str | None
    """``"failed"`` | ``"delayed"`` | ``None`` when the bounce does not say."""
    status: str | None
    """RFC 3463 enhanced status code such as ``"5.1.1"``, or ``None``."""
    diagnostic: str | None
    """Diagnostic-Code text or SMTP reply, when present."""
    kind: str | None
    """``"hard"`` | ``"soft"`` | ``None``."""


def _empty_headers() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class BounceReport:
    """What :func:`parse_bounce` found out about one incoming message."""

    is_bounce: bool
    kind: str | None
    """``"hard"`` | ``"soft"`` | ``"complaint"`` | ``None`` (not a bounce)."""
    action: str | None
    """``"failed"`` | ``"delayed"`` | ``None``."""
    status: str | None
    """The most significant RFC 3463 status of the report."""
    recipients: tuple[BouncedRecipient, ...] = ()
    original_message_id: str | None = None
    original_headers: Mapping[str, str] = field(default_factory=_empty_headers)
    verp_address: str | None = None
    reason: str = ""
