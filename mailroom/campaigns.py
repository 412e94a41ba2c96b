"""Creating campaigns and reading their progress (the CLI's side of the database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncpg.pool import Pool
from mailroom_common.adaptive_rate import ACCOUNT_RATE_NAME, AdaptiveRateLimiter
from mailroom_common.broker import Topology, declare_topology, make_broker, publish_event
from mailroom_common.campaign_counts import campaign_progress, item_counts
from mailroom_common.events import OPEN_STATUSES, Event
from mailroom_common.rendering import MessageContent, TemplateProblem, compile_message
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore
from mailroom_common.settings import Settings

# what `campaign list --json` shows of each campaign
LISTED = (
    "id",
    "name",
    "status",
    "send_at",
    "launched_at",
    "completed_at",
    "items",
    "open",
    "done",
    "counts",
)


class CampaignProblem(ValueError):
    """A campaign request a person must correct; str() says how."""


@dataclass(frozen=True)
class NewCampaign:
    name: str
    subject: str
    from_email: str
    from_name: str
    html_template: str
    text_template: str | None
    lists: list[str]
    reply_to: str | None = None


async def create_campaign(pool: Pool, campaign: NewCampaign, settings: Settings) -> int:
    if not campaign.lists:
        raise CampaignProblem("name at least one target list (--list NAME)")
    marketing, _ = await SettingsStore(pool, settings.settings_key).load(MarketingSettings)
    try:
        compile_message(
            MessageContent(
                subject=campaign.subject,
                html=campaign.html_template,
                text=campaign.text_template,
                from_name=campaign.from_name,
                from_email=campaign.from_email,
                reply_to=campaign.reply_to,
                text_footer=marketing.text_footer,
                html_footer=marketing.html_footer,
            ),
            context={"campaign": {"id": 0, "name": campaign.name}},
        )
    except TemplateProblem as problem:
        raise CampaignProblem(str(problem)) from problem
    async with pool.acquire() as conn, conn.transaction():
        list_ids = await conn.fetch(
            "SELECT id, name FROM lists WHERE name = ANY($1)", campaign.lists
        )
        missing = sorted(set(campaign.lists) - {r["name"] for r in list_ids})
        if missing:
            raise CampaignProblem(f"unknown list(s): {', '.join(missing)}")
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_name, from_email, reply_to,"
            " html_template, text_template) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            campaign.name,
            campaign.subject,
            campaign.from_name,
            campaign.from_email,
            campaign.reply_to,
            campaign.html_template,
            campaign.text_template,
        )
        await conn.executemany(
            "INSERT INTO campaign_lists (campaign_id, list_id) VALUES ($1, $2)",
            [(campaign_id, r["id"]) for r in list_ids],
        )
    return campaign_id


async def campaign_status(pool: Pool, campaign_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT id, name, status, pause_reason, generation_done, failure_reason, send_at,"
        " launched_at,"
        " generated_at, completed_at, archived_at FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        return None
    counts = await item_counts(pool, campaign_id)
    total = sum(counts.values())
    open_items = sum(counts.get(s, 0) for s in OPEN_STATUSES)
    status = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}
    status.update(items=total, open=open_items, done=total - open_items, counts=counts)
    # the SMTP account's shared rate, as the senders adapt it to the relay (not the campaign's)
    status["send_rate"] = await AdaptiveRateLimiter(pool, ACCOUNT_RATE_NAME).summary()
    return status


async def send_command(settings: Settings, command: Event) -> None:
    """Publish a command the way the CRM would: to the commands exchange, confirmed."""
    broker = make_broker(settings)
    await broker.connect()
    try:
        await declare_topology(broker, Topology.from_settings(settings))
        await publish_event(broker, Topology.from_settings(settings).commands, command)
    finally:
        await broker.stop()


async def list_campaigns(pool: Pool, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest campaigns, with their items by status and their progress."""
    listed = await campaign_progress(pool, limit)
    return [{k: v for k, v in c.items() if k in LISTED} for c in listed]


async def campaign_exists(pool: Pool, campaign_id: int) -> bool:
    return bool(await pool.fetchval("SELECT 1 FROM campaigns WHERE id = $1", campaign_id))
