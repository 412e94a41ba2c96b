"""Inputs of rendering: what every recipient shares, and what is per recipient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MessageContent:
    """What is the same for every recipient of a campaign or autoresponder."""

    subject: str  # Jinja2 template
    html: str  # Jinja2 template (full HTML document or fragment)
    text: str | None  # Jinja2 template; None -> derived from the HTML template
    from_name: str
    from_email: str
    text_footer: str  # Jinja2 template appended to the text part
    html_footer: str  # Jinja2 template appended to the HTML part (before </body> if any)
    reply_to: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()  # e.g. (("Auto-Submitted", "auto-generated"),)


@dataclass(frozen=True)
class Recipient:
    """What differs per recipient."""

    email: str
    name: str  # display name, may be empty, may be non-ASCII
    fields: Mapping[str, Any]  # merge fields, exposed to templates as `contact`
    message_id: str  # full "<...@domain>" value for the Message-ID header
    unsubscribe_url: str
    manage_url: str
    one_click_url: str  # https URL for List-Unsubscribe (RFC 8058 one-click POST target)
    extra_headers: tuple[tuple[str, str], ...] = ()  # e.g. (("X-Mailroom-Item", "123"),)
