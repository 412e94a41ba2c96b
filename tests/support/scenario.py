"""Waiting on campaigns and the SMTP server, shared by the integration tests."""

from __future__ import annotations

import subprocess
from typing import Any

import asyncpg
from mailroom_common.broker import Topology, declare_topology, make_broker, publish_event
from mailroom_common.campaign_lifecycle import FINAL_STATUSES
from mailroom_common.events import CampaignLaunch, SettingsChanged
from mailroom_common.runtime_settings import SettingsStore
from pydantic import BaseModel

from mailroom.campaigns import campaign_status, send_command
from tests.support.environment import Installation, wait_for
from tests.support.seed import Audience, make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer


def pool_of(install: Installation) -> asyncpg.Pool:
    assert install.pool is not None, "installation.setup() was not run"
    return install.pool


async def status_of(install: Installation, campaign_id: int) -> dict[str, Any]:
    status = await campaign_status(pool_of(install), campaign_id)
    assert status is not None, f"no campaign {campaign_id}"
    return status


async def campaign_reaches(
    install: Installation, campaign_id: int, *wanted: str, limit: float = 180
) -> dict[str, Any]:
    """Wait until the campaign is in one of `wanted` (default: any final status)."""
    statuses = wanted or FINAL_STATUSES
    result: dict[str, Any] = {}

    async def there() -> bool:
        result.update(await status_of(install, campaign_id))
        return result["status"] in statuses

    await wait_for(there, limit, f"campaign {campaign_id} to be {' or '.join(statuses)}")
    return result


async def items_in(pool: asyncpg.Pool, campaign_id: int, *statuses: str) -> int:
    """How many of the campaign's items are in one of `statuses`."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND status = ANY($2)",
        campaign_id,
        list(statuses),
    )
    return n


def received_count(smtp: SmtpServer) -> int:
    with smtp.handler.lock:
        return len(smtp.handler.received)


async def smtp_received(smtp: SmtpServer, at_least: int, limit: float = 60) -> None:
    async def enough() -> bool:
        return received_count(smtp) >= at_least

    await wait_for(enough, limit, f"{at_least} messages received")


async def launched_campaign(
    install: Installation, smtp: SmtpServer, recipients: int, **smtp_changes: object
) -> tuple[Audience, int, subprocess.Popen[bytes]]:
    """An audience, the SMTP account pointed at `smtp`, a campaign, every service running
    in one process, and the campaign launched by publishing its event."""
    pool = pool_of(install)
    audience = await make_audience(pool, recipients)
    await use_smtp_server(pool, smtp.port, **smtp_changes)
    campaign_id = await make_campaign(pool, audience)
    process = install.start_services()
    await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
    return audience, campaign_id, process


async def change_settings(install: Installation, value: BaseModel) -> int:
    """What the config service does on a PUT: store the group, then announce the change."""
    store = SettingsStore(pool_of(install), install.settings.settings_key)
    version, changed = await store.save(value, changed_by="tests")
    broker = make_broker(install.settings)
    await broker.connect()
    try:
        topology = Topology.from_settings(install.settings)
        await declare_topology(broker, topology)
        group = value.model_dump()["group"]
        change = SettingsChanged(group=group, version=version, changed_keys=changed)
        await publish_event(broker, topology.events, change, mandatory=False)
    finally:
        await broker.stop()
    return version
