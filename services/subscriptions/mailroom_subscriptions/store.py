"""What an unsubscribe or a preferences change does to PostgreSQL, each in one transaction.

- the chosen memberships become 'unsubscribed' (or 'subscribed' again, from the preferences),
  for every contact with the contact's address (case-insensitive): a CRM may hold several
  contacts with one address, campaigns de-duplicate by address, and the person who asked
  owns the address;
- "everything" also suppresses the address (reason 'unsubscribed');
- open items (pending/queued/retry) of running campaigns that would still reach the address
  through a list it left become 'skipped', so the sender's claim passes them by. An item
  already 'sending' is in flight and cannot be stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncpg.pool import Pool, PoolConnectionProxy

RUNNING_CAMPAIGNS = ("scheduled", "generating", "sending", "paused")

SKIP_OPEN_ITEMS = """
UPDATE campaign_items i SET status = 'skipped', error = $3
FROM campaigns c
WHERE c.id = i.campaign_id
  AND c.status = ANY($5::text[])
  AND lower(i.email) = lower($1)
  AND i.status IN ('pending', 'queued', 'retry')
  AND (
    $2::boolean
    OR (
      EXISTS (SELECT 1 FROM campaign_lists cl
              WHERE cl.campaign_id = c.id AND cl.list_id = ANY($4::bigint[]))
      AND NOT EXISTS (
        SELECT 1 FROM campaign_lists cl
        JOIN list_memberships m ON m.list_id = cl.list_id AND m.status = 'subscribed'
        JOIN contacts k ON k.id = m.contact_id
        WHERE cl.campaign_id = c.id AND lower(k.email) = lower($1)
      )
    )
  )
RETURNING i.id
"""


@dataclass(frozen=True)
class Contact:
    id: int
    email: str
    crm_id: str | None = None  # the CRM's own id (contact.activity), null for CSV contacts


@dataclass(frozen=True)
class Membership:
    list_id: int
    name: str
    status: str  # subscribed, unsubscribed, unconfirmed


@dataclass
class Change:
    """What one request changed; `unsubscribed` drives the contact.unsubscribed event."""

    contact: Contact
    unsubscribed: list[int] = field(default_factory=list)  # lists left now
    resubscribed: list[int] = field(default_factory=list)
    suppressed: bool = False  # the address was newly suppressed
    unsuppressed: bool = False
    skipped_items: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.unsubscribed or self.suppressed)

    @property
    def preferences_changed(self) -> bool:
        return bool(self.anything or self.resubscribed or self.unsuppressed)


def parse_source(source: str) -> tuple[str, int] | None:
    """("campaign", id) for "c<id>", ("autoresponder", id) for "a<id>", else None."""
    kinds = {"c": "campaign", "a": "autoresponder"}
    if len(source) < 2 or source[0] not in kinds or not source[1:].isdigit():
        return None
    return kinds[source[0]], int(source[1:])


async def find_contact(pool: Pool, contact_id: int) -> Contact | None:
    row = await pool.fetchrow("SELECT id, email, crm_id FROM contacts WHERE id = $1", contact_id)
    return None if row is None else Contact(row["id"], row["email"], row["crm_id"])


SAME_ADDRESS = "SELECT id FROM contacts WHERE lower(email) = lower($1)"


async def memberships(pool: Pool, email: str) -> list[Membership]:
    """The lists of every contact with this address; subscribed if any of them is."""
    rows = await pool.fetch(
        "SELECT l.id, l.name, CASE WHEN bool_or(m.status = 'subscribed') THEN 'subscribed'"
        " WHEN bool_or(m.status = 'unconfirmed') THEN 'unconfirmed' ELSE 'unsubscribed' END"
        " AS status FROM list_memberships m JOIN lists l ON l.id = m.list_id"
        f" WHERE m.contact_id IN ({SAME_ADDRESS}) GROUP BY l.id, l.name ORDER BY l.name, l.id",
        email,
    )
    return [Membership(r["id"], r["name"], r["status"]) for r in rows]


async def is_suppressed(pool: Pool, email: str) -> bool:
    found = await pool.fetchval("SELECT 1 FROM suppressions WHERE email = lower($1)", email)
    return found is not None


async def source_lists(pool: Pool, source: str) -> list[int] | None:
    """The lists an unsubscribe link of `source` takes the contact off; None: every list
    and the suppression (an autoresponder, which no list sends)."""
    parsed = parse_source(source)
    if parsed is None or parsed[0] == "autoresponder":
        return None
    rows = await pool.fetch(
        "SELECT list_id FROM campaign_lists WHERE campaign_id = $1 ORDER BY list_id", parsed[1]
    )
    return [r["list_id"] for r in rows]


async def _lock_contact(conn: PoolConnectionProxy, contact_id: int) -> Contact | None:
    row = await conn.fetchrow("SELECT id, email, crm_id FROM contacts WHERE id = $1", contact_id)
    if row is None:
        return None
    # every contact of the address, in id order (two requests never deadlock)
    await conn.execute(
        f"SELECT 1 FROM contacts WHERE id IN ({SAME_ADDRESS}) ORDER BY id FOR UPDATE",
        row["email"],
    )
    return Contact(row["id"], row["email"], row["crm_id"])


async def _skip_items(
    conn: PoolConnectionProxy, contact: Contact, lists: list[int], everything: bool, why: str
) -> int:
    rows = await conn.fetch(
        SKIP_OPEN_ITEMS, contact.email, everything, why, lists, list(RUNNING_CAMPAIGNS)
    )
    return len(rows)


async def _count_for_campaign(conn: PoolConnectionProxy, source: str) -> None:
    """One more unsubscribe that came from a campaign's links (campaigns.unsubscribes)."""
    parsed = parse_source(source)
    if parsed is not None and parsed[0] == "campaign":
        await conn.execute(
            "UPDATE campaigns SET unsubscribes = unsubscribes + 1 WHERE id = $1", parsed[1]
        )


async def unsubscribe(
    pool: Pool, contact_id: int, lists: list[int] | None, everything: bool, source: str
) -> Change | None:
    """Take the contact off `lists` (None: all of its lists); with `everything` also
    suppress the address. None when the contact does not exist (any more)."""
    async with pool.acquire() as conn, conn.transaction():
        contact = await _lock_contact(conn, contact_id)
        if contact is None:
            return None
        change = Change(contact)
        left = await conn.fetch(
            "UPDATE list_memberships SET status = 'unsubscribed', updated_at = now()"
            f" WHERE contact_id IN ({SAME_ADDRESS}) AND status <> 'unsubscribed'"
            " AND ($2::bigint[] IS NULL OR list_id = ANY($2::bigint[]))"
            " RETURNING list_id",
            contact.email,
            lists,
        )
        change.unsubscribed = sorted({r["list_id"] for r in left})
        if everything:
            added = await conn.fetchval(
                "INSERT INTO suppressions (email, reason, detail)"
                " VALUES (lower($1), 'unsubscribed', $2) ON CONFLICT (email) DO NOTHING"
                " RETURNING email",
                contact.email,
                f"unsubscribe link ({source})",
            )
            change.suppressed = added is not None
        targeted = lists if lists is not None else change.unsubscribed
        why = "unsubscribed from everything" if everything else "unsubscribed from the list"
        change.skipped_items = await _skip_items(
            conn, contact, targeted or [], everything, f"{why} before sending ({source})"
        )
        if change.anything:
            await _count_for_campaign(conn, source)
        return change


async def save_preferences(
    pool: Pool, contact_id: int, wanted: set[int], source: str
) -> Change | None:
    """Subscribed exactly to `wanted` among the contact's lists (unconfirmed ones stay
    unconfirmed when kept). Subscribing to any list lifts an 'unsubscribed' suppression."""
    async with pool.acquire() as conn, conn.transaction():
        contact = await _lock_contact(conn, contact_id)
        if contact is None:
            return None
        change = Change(contact)
        left = await conn.fetch(
            "UPDATE list_memberships SET status = 'unsubscribed', updated_at = now()"
            f" WHERE contact_id IN ({SAME_ADDRESS}) AND status <> 'unsubscribed'"
            " AND NOT (list_id = ANY($2::bigint[])) RETURNING list_id",
            contact.email,
            sorted(wanted),
        )
        change.unsubscribed = sorted({r["list_id"] for r in left})
        back = await conn.fetch(
            "UPDATE list_memberships SET status = 'subscribed', updated_at = now()"
            f" WHERE contact_id IN ({SAME_ADDRESS}) AND status = 'unsubscribed'"
            " AND list_id = ANY($2::bigint[]) RETURNING list_id",
            contact.email,
            sorted(wanted),
        )
        change.resubscribed = sorted({r["list_id"] for r in back})
        if wanted:
            lifted = await conn.fetchval(
                "DELETE FROM suppressions WHERE email = lower($1) AND reason = 'unsubscribed'"
                " RETURNING email",
                contact.email,
            )
            change.unsuppressed = lifted is not None
        if change.unsubscribed:
            change.skipped_items = await _skip_items(
                conn,
                contact,
                change.unsubscribed,
                False,
                f"unsubscribed from the list before sending (preferences, {source})",
            )
            await _count_for_campaign(conn, source)
        return change
