"""A campaign's compiled message, built once per campaign and marketing-settings version."""

from __future__ import annotations

from dataclasses import dataclass

from mailroom_common.campaign_message import compile_campaign
from mailroom_common.rendering import CompiledMessage
from mailroom_common.runtime_settings import MarketingSettings

__all__ = ["CampaignMessage", "compile_campaign"]


@dataclass(frozen=True)
class CampaignMessage:
    campaign_id: int
    compiled: CompiledMessage
    marketing: MarketingSettings
