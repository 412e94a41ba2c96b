"""Subscribe one contact to a list (`mailroom contacts subscribe`), as a signup form would."""

from __future__ import annotations

from dataclasses import dataclass

from asyncpg.pool import Pool
from mailroom_common.addresses import AddressProblem, checked_address
from mailroom_common.events import ContactSubscribed
from mailroom_common.settings import Settings

from mailroom.autoresponders import announce_events
from mailroom.contacts_import import IMPORT_LOCK


@dataclass(frozen=True)
class Subscription:
    contact_id: int
    list_id: int
    created_contact: bool
    newly_subscribed: bool  # False: was subscribed already (nothing announced)


async def subscribe_contact(
    pool: Pool,
    settings: Settings,
    address: str,
    list_name: str,
    first_name: str = "",
    last_name: str = "",
) -> Subscription:
    """The person asked to be on the list: the membership becomes subscribed (again), an
    'unsubscribed' suppression of the address is lifted (a bounce or complaint is not), and
    a new subscription is announced as contact.subscribed."""
    try:
        email = checked_address(address)
    except AddressProblem as error:
        raise ValueError(f"invalid email {address!r}: {error}") from error
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK)
        list_id: int = await conn.fetchval(
            "INSERT INTO lists (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = $1"
            " RETURNING id",
            list_name,
        )
        contact_id = await conn.fetchval(
            "SELECT id FROM contacts WHERE lower(email) = lower($1) ORDER BY id LIMIT 1", email
        )
        created = contact_id is None
        if created:
            contact_id = await conn.fetchval(
                "INSERT INTO contacts (email, first_name, last_name) VALUES ($1, $2, $3)"
                " RETURNING id",
                email,
                first_name,
                last_name,
            )
        changed_at = await conn.fetchval(
            "INSERT INTO list_memberships (list_id, contact_id) VALUES ($1, $2)"
            " ON CONFLICT (list_id, contact_id) DO UPDATE SET status = 'subscribed',"
            " updated_at = now() WHERE list_memberships.status <> 'subscribed'"
            " RETURNING updated_at",
            list_id,
            contact_id,
        )
        await conn.execute(
            "DELETE FROM suppressions WHERE email = lower($1) AND reason = 'unsubscribed'", email
        )
    if changed_at is not None:
        await announce_events(
            settings,
            [
                ContactSubscribed(
                    contact_id=contact_id,
                    list_id=list_id,
                    event_id=f"subscribed:{list_id}:{contact_id}:{changed_at.isoformat()}",
                )
            ],
        )
    return Subscription(contact_id, list_id, created, changed_at is not None)
