"""contact.erased: a person's address and fields removed from everywhere Mailroom keeps them,
in one transaction under CONTACTS_LOCK, keeping only what the counts and the suppression list
need.

Who: the contacts with the crm_ids named, and every contact holding an address named. What:

- the contacts: address, names and attributes emptied, `erased_at` set, memberships deleted;
  the row stays (its items name it) with its crm_id (a redelivered erasure finds it done, a
  late upsert of the id is refused);
- their items, campaign, archived and autoresponder: the address becomes `erased:<item id>`,
  SMTP replies and errors go, autoresponder data goes; the status stays (the campaign's
  counts), except that an item still open is `skipped`;
- bounces of those items, and bounces of an address no contact holds any more: address,
  diagnostic and returned headers go (kind, status code and the message digest stay);
- suppressions of an address no contact holds any more keep only
  `mailroom_address_hash(address)` (a contact written with the address again gets the plain
  suppression back: migration 0015's trigger); unparsed bounce messages that hold the
  address are deleted; the address is redacted from campaigns' failure and pause reasons,
  the relay's last throttling reply and the job heartbeats' last errors.

An address another contact still holds stays where that contact's data is (its items, the
suppression). Items are found by address, campaign by campaign (the unique index on
`(campaign_id, lower(email))`; campaign_items has no index on contact_id, which would cost
every snapshot): an item made for an address the contact no longer has is erased when the
request names that address in `emails`.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncpg.pool import PoolConnectionProxy
from mailroom_common.contacts import CONTACTS_LOCK
from mailroom_common.events import ContactErased, ContactErasedDone
from mailroom_common.runtime import Runtime

FIND = """
SELECT id, crm_id, lower(email) AS address, erased_at IS NOT NULL AS erased FROM contacts
WHERE crm_id = ANY($1::text[])
   OR lower(email) = ANY(ARRAY(SELECT lower(e) FROM unnest($2::text[]) AS e))
ORDER BY id
FOR UPDATE
"""

LOWERED = "SELECT array(SELECT DISTINCT lower(e) FROM unnest($1::text[]) AS e WHERE e <> '')"

SCRUB_CONTACTS = """
UPDATE contacts SET email = '', first_name = '', last_name = '', attributes = '{}',
    email_valid = false, erased_at = now(), updated_at = now()
WHERE id = ANY($1::bigint[])
"""

FORGET_MEMBERSHIPS = "DELETE FROM list_memberships WHERE contact_id = ANY($1::bigint[])"
FORGET_ANNOUNCEMENTS = "DELETE FROM contact_announcements WHERE contact_id = ANY($1::bigint[])"

# the addresses among $1 that no contact holds any more
GONE = """
SELECT array(SELECT a FROM unnest($1::text[]) AS a
             WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE lower(c.email) = a))
"""

OPEN = "('pending', 'queued', 'sending', 'retry')"

# $1 addresses looked for, $2 contacts erased, $3 addresses gone: an item is the erased
# person's when its contact is erased or its address is gone
CAMPAIGN_ITEMS = f"""
WITH found AS (
    SELECT i.id FROM campaigns c
    CROSS JOIN unnest($1::text[]) AS a(address)
    -- one probe of the unique index per campaign and address (OFFSET 0: never a hash of
    -- the whole table, which the planner chose for a hundred addresses)
    CROSS JOIN LATERAL (
        SELECT i.id, i.contact_id FROM campaign_items i
        WHERE i.campaign_id = c.id AND lower(i.email) = a.address OFFSET 0) i
    -- a campaign archived whole has no items left here (archived_items, by address)
    WHERE c.archived_at IS NULL
      AND (i.contact_id = ANY($2::bigint[]) OR a.address = ANY($3::text[])))
UPDATE campaign_items i SET
    status = CASE WHEN i.status IN {OPEN} THEN 'skipped' ELSE i.status END,
    error = CASE WHEN i.status IN {OPEN} THEN 'recipient erased before sending' END,
    email = 'erased:' || i.id, smtp_reply = NULL
FROM found f WHERE i.id = f.id
RETURNING i.id
"""

ARCHIVED_ITEMS = """
UPDATE archived_items SET email = 'erased:' || id
WHERE lower(email) = ANY($1::text[])
  AND (contact_id = ANY($2::bigint[]) OR lower(email) = ANY($3::text[]))
RETURNING id
"""

AUTORESPONDER_ITEMS = f"""
UPDATE autoresponder_items SET
    status = CASE WHEN status IN {OPEN} THEN 'skipped' ELSE status END,
    error = CASE WHEN status IN {OPEN} THEN 'recipient erased before sending' END,
    email = 'erased:' || id, smtp_reply = NULL, data = '{{}}'
WHERE lower(email) = ANY($1::text[])
  AND (contact_id = ANY($2::bigint[]) OR lower(email) = ANY($3::text[]))
RETURNING id
"""

BOUNCES = """
UPDATE bounces SET email = 'erased:' || id, diagnostic = NULL, headers = '{}'
WHERE id IN (
    SELECT id FROM bounces WHERE item_id = ANY($1::bigint[])
    UNION SELECT id FROM bounces WHERE autoresponder_item_id = ANY($2::bigint[])
    UNION SELECT id FROM bounces WHERE lower(email) = ANY($3::text[]))
RETURNING id
"""

HASH_SUPPRESSIONS = """
WITH plain AS (
    DELETE FROM suppressions WHERE email = ANY($1::text[])
    RETURNING email, reason, detail, created_at),
hashed AS (
    INSERT INTO suppressions (email, reason, detail, created_at)
    SELECT mailroom_address_hash(email), reason, mailroom_redact(detail, $1::text[]), created_at
    FROM plain
    ON CONFLICT (email) DO NOTHING)
SELECT count(*) FROM plain
"""


# where it is there: a case-insensitive search of each address
def _holds(text: str) -> str:
    return f"EXISTS (SELECT 1 FROM unnest($1::text[]) AS a WHERE strpos(lower({text}), a) > 0)"


HEAD = "encode(head, 'escape')"
UNPARSED = f"DELETE FROM unparsed_messages WHERE {_holds(HEAD)} OR {_holds('headers::text')}"

REASONS = "coalesce(failure_reason, '') || ' ' || coalesce(pause_reason, '')"
THROTTLING_REPLY = "coalesce(reason, '')"
LAST_ERROR = "coalesce(last_error, '')"
REDACT_FREE_TEXT = (
    "UPDATE campaigns SET failure_reason = mailroom_redact(failure_reason, $1::text[]),"
    f" pause_reason = mailroom_redact(pause_reason, $1::text[]) WHERE {_holds(REASONS)}",
    "UPDATE rate_limits SET reason = mailroom_redact(reason, $1::text[])"
    f" WHERE {_holds(THROTTLING_REPLY)}",
    "UPDATE job_heartbeats SET last_error = mailroom_redact(last_error, $1::text[])"
    f" WHERE {_holds(LAST_ERROR)}",
)


@dataclass
class Erasure:
    contacts: int = 0
    items: int = 0
    bounces: int = 0
    suppressions_hashed: int = 0


async def _scrub(conn: PoolConnectionProxy, looked_for: list[str], erased: list[int]) -> Erasure:
    done = Erasure(contacts=len(erased))
    await conn.execute(SCRUB_CONTACTS, erased)
    await conn.execute(FORGET_MEMBERSHIPS, erased)
    await conn.execute(FORGET_ANNOUNCEMENTS, erased)
    gone: list[str] = await conn.fetchval(GONE, looked_for)
    campaign = [r["id"] for r in await conn.fetch(CAMPAIGN_ITEMS, looked_for, erased, gone)]
    archived = [r["id"] for r in await conn.fetch(ARCHIVED_ITEMS, looked_for, erased, gone)]
    autoresponder = [
        r["id"] for r in await conn.fetch(AUTORESPONDER_ITEMS, looked_for, erased, gone)
    ]
    done.items = len(campaign) + len(archived) + len(autoresponder)
    bounces = await conn.fetch(BOUNCES, campaign + archived, autoresponder, gone)
    done.bounces = len(bounces)
    if gone:
        done.suppressions_hashed = await conn.fetchval(HASH_SUPPRESSIONS, gone)
        await conn.execute(UNPARSED, gone)
        for statement in REDACT_FREE_TEXT:
            await conn.execute(statement, gone)
    return done


async def erase_contacts(runtime: Runtime, event: ContactErased) -> ContactErasedDone:
    """Erase everyone the event names (again: nothing is left to do the second time)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CONTACTS_LOCK)
        found = await conn.fetch(FIND, event.crm_ids, event.emails)
        known = {r["crm_id"] for r in found if r["crm_id"] is not None}
        erased = [r["id"] for r in found if not r["erased"]]
        named: list[str] = await conn.fetchval(LOWERED, event.emails)
        looked_for = sorted({*named, *(r["address"] for r in found if not r["erased"])} - {""})
        done = await _scrub(conn, looked_for, erased)
    return ContactErasedDone(
        correlation_id=event.correlation_id,
        crm_ids=list(event.crm_ids),
        unknown_crm_ids=[c for c in event.crm_ids if c not in known],
        contacts=done.contacts,
        items=done.items,
        bounces=done.bounces,
        suppressions_hashed=done.suppressions_hashed,
    )
