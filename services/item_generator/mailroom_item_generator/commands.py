"""Campaign commands: launch, pause, resume, cancel. Each is idempotent; the transitions
themselves are mailroom_common.campaign_lifecycle's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from mailroom_common import campaign_lifecycle
from mailroom_common.campaign_lifecycle import UnknownCampaign
from mailroom_common.events import (
    CampaignCancel,
    CampaignLaunch,
    CampaignPause,
    CampaignResume,
    Event,
)
from mailroom_common.intake import Rejected
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)


async def launch(runtime: Runtime, command: CampaignLaunch) -> bool:
    """Mark a draft campaign for generation, now or at send_at. False if it was not a draft."""
    send_at = command.send_at or datetime.now(UTC)
    if send_at.tzinfo is None:
        raise Rejected("send_at must carry a time zone (e.g. 2026-12-01T09:00:00+00:00)")
    if await campaign_lifecycle.launch(runtime, command.campaign_id, send_at) is None:
        log.info("campaign %d was launched already: launch ignored", command.campaign_id)
        return False
    return True


async def dispatch(
    runtime: Runtime,
    command: Event,
    resumed: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Carry out a campaign command; `resumed` is called with the id of a campaign that
    resumed (to hand its parked pages over at once)."""
    try:
        match command:
            case CampaignLaunch():
                await launch(runtime, command)
            case CampaignPause():
                await campaign_lifecycle.pause(runtime, command.campaign_id)
            case CampaignResume():
                status = await campaign_lifecycle.resume(runtime, command.campaign_id)
                if status is not None and resumed is not None:
                    await resumed(command.campaign_id)
            case CampaignCancel():
                await campaign_lifecycle.cancel(runtime, command.campaign_id)
            case _:
                raise Rejected(f"not a campaign command: {command.routing_key}")
    except UnknownCampaign as unknown:
        raise Rejected(str(unknown)) from unknown
