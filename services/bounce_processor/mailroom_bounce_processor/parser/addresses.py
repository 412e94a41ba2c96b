"""Pulling e-mail addresses out of header fields and free text."""

from __future__ import annotations

import re

ADDRESS_RE = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`~-])"
    r"([\w.!#$%&'*+/=?^`~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+)",
)


def clean(address: str) -> str:
    address = address.strip().strip("<>\"'()[],;:.").strip()
    return address.lower()


def extract_address(value: str | None) -> str | None:
    """The address of a DSN recipient field (``rfc822; <a@b>``) or any header value."""
    if not value:
        return None
    text = value
    if ";" in text:
        text = text.split(";", 1)[1]
    match = ADDRESS_RE.search(text)
    if match is None:
        match = ADDRESS_RE.search(value)
    if match is None:
        return None
    return clean(match.group(1))


def find_addresses(text: str) -> list[str]:
    seen: list[str] = []
    for match in ADDRESS_RE.finditer(text):
        address = clean(match.group(1))
        if address not in seen:
            seen.append(address)
    return seen
