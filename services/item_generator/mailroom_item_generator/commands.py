"""Campaign commands: create, update, launch, pause, resume, cancel. Each is idempotent;
drafts are checked and stored by mailroom_common.campaign_drafts (as `mailroom campaign
create` does), the transitions are mailroom_common.campaign_lifecycle's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from mailroom_common import campaign_lifecycle
from mailroom_common.campaign_drafts import CampaignProblem, NewCampaign, create_draft, update_draft
from mailroom_common.campaign_lifecycle import UnknownCampaign
from mailroom_common.events import (
    CampaignCancel,
    CampaignCreate,
    CampaignCreated,
    CampaignLaunch,
    CampaignPause,
    CampaignResume,
    CampaignUpdate,
    CampaignUpdated,
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


async def create(runtime: Runtime, command: CampaignCreate, message_id: str | None) -> None:
    """Store the draft (or find the one this request made before) and answer."""
    created = await create_draft(
        runtime.pool,
        runtime.settings,
        NewCampaign.of(command),
        idempotency_key=command.idempotency_key,
        message_id=message_id,
    )
    log.info(
        "campaign %d %s (correlation id %r)",
        created.campaign_id,
        "made before by the same request" if created.replayed else "created",
        command.correlation_id,
    )
    await runtime.announce(
        CampaignCreated(
            campaign_id=created.campaign_id,
            correlation_id=command.correlation_id,
            idempotency_key=command.idempotency_key,
            replayed=created.replayed,
        )
    )


async def update(runtime: Runtime, command: CampaignUpdate) -> None:
    changed = await update_draft(runtime.pool, runtime.settings, command)
    log.info(
        "draft campaign %d updated: %s", command.campaign_id, ", ".join(changed) or "no change"
    )
    await runtime.announce(
        CampaignUpdated(
            campaign_id=command.campaign_id,
            correlation_id=command.correlation_id,
            changed=changed,
        )
    )


async def dispatch(
    runtime: Runtime,
    command: Event,
    resumed: Callable[[int], Awaitable[None]] | None = None,
    message_id: str | None = None,
) -> None:
    """Carry out a campaign command; `resumed` is called with the id of a campaign that
    resumed (to hand its parked pages over at once). `message_id` is the broker's id of a
    create's message (a redelivery of a create without an idempotency key finds its campaign)."""
    try:
        match command:
            case CampaignCreate():
                await create(runtime, command, message_id)
            case CampaignUpdate():
                await update(runtime, command)
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
    except CampaignProblem as problem:
        raise Rejected(problem.reason) from problem
