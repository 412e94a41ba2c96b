"""A campaign's message compiled from its stored fields: one way, for the message processor
(once per campaign) and for the check of a draft (campaign_drafts), so that a draft is
checked as it will be sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncpg import Record

from mailroom_common.rendering import CompiledMessage, MessageContent, compile_message
from mailroom_common.runtime_settings import MarketingSettings


def compile_campaign(
    campaign: Record | Mapping[str, Any], marketing: MarketingSettings
) -> CompiledMessage:
    """`campaign` holds the columns of `campaigns` (id, name, the templates, the addresses).
    Raises TemplateProblem with a message for the marketer. Takes up to COMPILE_SECONDS:
    call it off the event loop."""
    content = MessageContent(
        subject=campaign["subject"],
        html=campaign["html_template"],
        text=campaign["text_template"],
        from_name=campaign["from_name"],
        from_email=campaign["from_email"],
        reply_to=campaign["reply_to"],
        text_footer=marketing.text_footer,
        html_footer=marketing.html_footer,
        extra_headers=(("Precedence", "bulk"), ("X-Mailroom-Campaign", str(campaign["id"]))),
    )
    return compile_message(
        content, context={"campaign": {"id": campaign["id"], "name": campaign["name"]}}
    )
