"""Where the public pages' links may point."""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset(("localhost", "127.0.0.1", "::1"))


def is_one_click_url(url: str) -> bool:
    """RFC 8058 wants HTTPS; plain http is accepted on loopback only (development, tests)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
