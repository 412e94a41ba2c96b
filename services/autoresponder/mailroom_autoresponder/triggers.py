"""Trigger events -> autoresponder items: one per (autoresponder, contact, event id).

The unique index makes a redelivered or repeated event a no-op; the due time is the event's
arrival plus the autoresponder's delay. Disabled autoresponders get no items.
"""

from __future__ import annotations

from mailroom_common.events import ContactEvent, ContactSubscribed
from mailroom_common.intake import Rejected
from mailroom_common.runtime import Runtime

CREATE_ITEMS = """
INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email, data, due_at)
SELECT a.id, c.id, $3, c.email, $4::jsonb, now() + make_interval(secs => a.delay_seconds)
FROM autoresponders a, contacts c
WHERE c.id = $1 AND a.enabled AND a.trigger_kind = $5
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
