"""Trigger events -> autoresponder items: one per (autoresponder, contact, event id).

The unique index makes a redelivered or repeated event a no-op; the due time is the event's
arrival plus the autoresponder's delay. Disabled autoresponders get no items.
"""

from __future__ import annotations

from mailroom_common.events import ContactEvent, ContactsSubscribed, ContactSubscribed
from mailroom_common.intake import Rejected
from mailroom_common.runtime import Runtime

CREATE_ITEMS = """
INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email, data, due_at)
SELECT a.id, c.id, $3, c.email, $4::jsonb, now() + make_interval(secs => a.delay_seconds)
FROM autoresponders a, contacts c
WHERE c.id = $1 AND c.erased_at IS NULL AND a.enabled AND a.trigger_kind = $5
  AND CASE WHEN $5 = 'contact.subscribed' THEN a.list_id = $2::bigint
           ELSE a.event_type = $6 END
ON CONFLICT (autoresponder_id, contact_id, event_id) DO NOTHING
RETURNING id, due_at <= now() AS due
"""


async def create_items(
    runtime: Runtime, event: ContactSubscribed | ContactEvent
) -> tuple[int, bool]:
    """Create the event's items; return how many, and whether one is due already."""
    if isinstance(event, ContactSubscribed):
        list_id, event_type, data = event.list_id, None, {}
    else:
        list_id, event_type, data = None, event.type, event.data
    async with runtime.pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM contacts WHERE id = $1", event.contact_id):
            raise Rejected(f"unknown contact {event.contact_id}")
        rows = await conn.fetch(
            CREATE_ITEMS,
            event.contact_id,
            list_id,
            event.event_id,
            data,
            event.routing_key,
            event_type,
        )
    return len(rows), any(r["due"] for r in rows)


# A batch (contacts.subscribed): the items of all its contacts in one statement. A contact
# deleted (or erased) since is skipped, not refused: one missing contact must not hold up
# the others.
CREATE_BATCH_ITEMS = """
WITH created AS (
    INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email, due_at)
    SELECT a.id, c.id, s.event_id, c.email, now() + make_interval(secs => a.delay_seconds)
    FROM unnest($2::bigint[], $3::text[]) AS s(contact_id, event_id)
    JOIN contacts c ON c.id = s.contact_id AND c.erased_at IS NULL
    JOIN autoresponders a ON a.list_id = $1 AND a.enabled
        AND a.trigger_kind = 'contact.subscribed'
    ON CONFLICT (autoresponder_id, contact_id, event_id) DO NOTHING
    RETURNING due_at <= now() AS due)
SELECT count(*) AS created, coalesce(bool_or(due), false) AS due FROM created
"""


async def create_batch_items(runtime: Runtime, event: ContactsSubscribed) -> tuple[int, bool]:
    """Create the items of every subscription of the batch; how many, and whether one is
    due already."""
    row = await runtime.pool.fetchrow(
        CREATE_BATCH_ITEMS,
        event.list_id,
        [s.contact_id for s in event.subscriptions],
        [s.event_id for s in event.subscriptions],
    )
    assert row is not None
    return row["created"], row["due"]
