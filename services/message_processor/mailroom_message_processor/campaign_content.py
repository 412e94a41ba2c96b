"""A campaign's compiled message, built once per campaign and marketing-settings version."""

from __future__ import annotations

from dataclasses import dataclass

from asyncpg import Record
from mailroom_common.rendering import CompiledMessage, MessageContent, compile_message
from mailroom_common.runtime_settings import MarketingSettings


@dataclass(frozen=True)
class CampaignMessage:
    campaign_id: int
    compiled: CompiledMessage
    marketing: MarketingSettings


def compile_campaign(campaign: Record, marketing: MarketingSettings) -> CompiledMessage:
    """Raises TemplateProblem with a message for the marketer."""
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
