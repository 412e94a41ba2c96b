"""contact.activity: what happened to each contact, for the CRM's timeline, batched.

Made where Mailroom already handles a batch, never a broker message per recipient: the
completion service turns each delivery.results into one contact.activity (sent, failed,
a hard bounce at send time), the bounce processor each bounce message or webhook call
(bounced, complained), the subscriptions service each unsubscribe or preferences change.
The contacts' ids come from one statement per batch: the items by primary key, each one's
CRM id by the contacts' primary key (a subquery, never a join the planner could turn into a
scan of every contact). Published to the events exchange, not mandatory: with no queue bound to
contact.activity RabbitMQ drops it, nothing accumulates. `MAILROOM_ACTIVITY_EVENTS=false`
skips the statement and the message too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncpg.pool import Pool

from mailroom_common.events import (
    MAX_ACTIVITIES,
    Activity,
    ActivityKind,
    BounceDetected,
    ContactActivity,
    DeliveryResults,
)
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)

CAMPAIGN_ITEMS = """
SELECT i.id, i.campaign_id, NULL::bigint AS autoresponder_id, i.contact_id,
       (SELECT c.crm_id FROM contacts c WHERE c.id = i.contact_id) AS crm_id, i.email,
       i.bounce_kind, i.sent_at, i.updated_at
FROM campaign_items i
WHERE i.id = ANY($1::bigint[])
"""
# a late bounce can be about an item archived since
CAMPAIGN_OR_ARCHIVED_ITEMS = (
    CAMPAIGN_ITEMS
    + """
UNION ALL
SELECT a.id, a.campaign_id, NULL::bigint, a.contact_id,
       (SELECT c.crm_id FROM contacts c WHERE c.id = a.contact_id), a.email, a.bounce_kind,
       a.sent_at, NULL::timestamptz
FROM archived_items a
WHERE a.id = ANY($1::bigint[])
  AND NOT EXISTS (SELECT 1 FROM campaign_items i WHERE i.id = a.id)
"""
)
AUTORESPONDER_ITEMS = """
SELECT i.id, NULL::bigint AS campaign_id, i.autoresponder_id, i.contact_id,
       (SELECT c.crm_id FROM contacts c WHERE c.id = i.contact_id) AS crm_id, i.email,
       i.bounce_kind, i.sent_at, i.updated_at
FROM autoresponder_items i
WHERE i.id = ANY($1::bigint[])
"""


def _entry(item: Any, kind: ActivityKind, at: datetime, **more: Any) -> Activity:
    return Activity(
        kind=kind,
        contact_id=item["contact_id"],
        crm_contact_id=item["crm_id"],
        email=item["email"],
        at=at,
        campaign_id=item["campaign_id"],
        autoresponder_id=item["autoresponder_id"],
        item_id=item["id"],
        **more,
    )


async def delivery_activities(pool: Pool, results: DeliveryResults) -> list[Activity]:
    """sent and failed (bounced, hard, for an address refused for good at send time), each
    at the time the item took its status (`sent_at`; `updated_at`, which the status change
    sets): the same entry again when a delivery.results is handled again, so a CRM can tell
    a repeat by (kind, item_id, at)."""
    final = {r.item_id: r for r in results.results if r.status in ("sent", "failed")}
    if not final:
        return []
    statement = AUTORESPONDER_ITEMS if results.kind == "autoresponder" else CAMPAIGN_ITEMS
    now = datetime.now(UTC)
    activities = []
    for item in await pool.fetch(statement, list(final)):
        result = final[item["id"]]
        if result.status == "sent":
            activities.append(_entry(item, "sent", item["sent_at"] or now))
        elif item["bounce_kind"] == "hard":
            activities.append(
                _entry(
                    item,
                    "bounced",
                    item["updated_at"],
                    bounce_kind="hard",
                    detail=result.smtp_reply,
                )
            )
        else:
            activities.append(_entry(item, "failed", item["updated_at"], detail=result.smtp_reply))
    return activities


async def bounce_activities(pool: Pool, events: Sequence[BounceDetected]) -> list[Activity]:
    """bounced (hard, soft) and complained, for the bounces matched to an item; a delayed
    warning changed nothing and is left out."""
    campaign = {e.item_id: e for e in events if e.item_id is not None and e.action != "delayed"}
    autoresponder = {
        e.autoresponder_item_id: e
        for e in events
        if e.autoresponder_item_id is not None and e.action != "delayed"
    }
    rows = []
    if campaign:
        rows += [
            (r, campaign[r["id"]])
            for r in await pool.fetch(CAMPAIGN_OR_ARCHIVED_ITEMS, list(campaign))
        ]
    if autoresponder:
        rows += [
            (r, autoresponder[r["id"]])
            for r in await pool.fetch(AUTORESPONDER_ITEMS, list(autoresponder))
        ]
    activities = []
    for item, event in rows:
        if event.kind == "complaint":
            activities.append(_entry(item, "complained", event.occurred_at, detail=event.status))
        else:
            activities.append(
                _entry(
                    item, "bounced", event.occurred_at, bounce_kind=event.kind, detail=event.status
                )
            )
    return activities


async def publish(runtime: Runtime, activities: Sequence[Activity]) -> int:
    """Publish `activities` as few contact.activity messages as the limit allows (one for
    any batch Mailroom makes); the number of messages published."""
    if not activities or not runtime.settings.activity_events:
        return 0
    published = 0
    for start in range(0, len(activities), MAX_ACTIVITIES):
        chunk = list(activities[start : start + MAX_ACTIVITIES])
        # the entries are validated already, and come from PostgreSQL, which holds no NUL:
        # the message's own check of every string would cost more than the rest together
        await runtime.announce(ContactActivity.model_construct(activities=chunk))
        published += 1
    return published


async def publish_news(runtime: Runtime, activities: Sequence[Activity]) -> None:
    """`publish` where the change is committed already: a broker that is away loses the
    news (logged), never the change."""
    try:
        await publish(runtime, activities)
    except Exception as error:
        log.warning("contact.activity (%d entries) not published: %r", len(activities), error)


async def publish_bounces(runtime: Runtime, events: Sequence[BounceDetected]) -> None:
    """The contact.activity of bounces recorded (one bounce message, one webhook call)."""
    if not events or not runtime.settings.activity_events:
        return
    try:
        activities = await bounce_activities(runtime.pool, events)
    except Exception as error:
        log.warning("contact.activity of %d bounces not made: %r", len(events), error)
        return
    await publish_news(runtime, activities)
