"""The returned original message and the VERP envelope address of the bounce."""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.message import Message
from types import MappingProxyType

from .addresses import ADDRESS_RE, clean
from .mime import get_all_headers, get_header

SELECTED_HEADERS = ("Message-ID", "X-Mailroom-Item", "Return-Path", "From", "To", "Subject", "Date")
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_VERP_LOCAL = re.compile(r"^[^@+]*(?:bounce|bnc|verp|return)[^@+]*[+=]|\+verp[-=]", re.I)


def original_headers(original: Message | None) -> Mapping[str, str]:
    if original is None:
        return MappingProxyType({})
    selected: dict[str, str] = {}
    for name in SELECTED_HEADERS:
        value = get_header(original, name)
        if value:
            selected[name] = value
    try:
        keys = list(original.keys())
    except Exception:
        keys = []
    for key in keys:
        if key.lower().startswith("x-mailroom-") and key not in selected:
            value = get_header(original, key)
            if value:
                selected[key] = value
    return MappingProxyType(selected)


def original_message_id(original: Message | None) -> str | None:
    if original is None:
        return None
    value = get_header(original, "message-id")
    if not value:
        return None
    match = _MSGID_RE.search(value)
    return match.group(0) if match else value.strip() or None


def verp_address(msg: Message) -> str | None:
    """The envelope recipient of the bounce when it is a VERP address."""
    for name in ("x-original-to", "delivered-to", "envelope-to", "x-envelope-to", "to"):
        for value in get_all_headers(msg, name):
            for match in ADDRESS_RE.finditer(value):
                address = clean(match.group(1))
                if _VERP_LOCAL.search(address.split("@", 1)[0] + "@"):
                    return address
    return None
