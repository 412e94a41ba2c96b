"""contact.upserted: the CRM's contacts by their crm_id, one batch in one transaction.

- Each contact is checked alone: an address Mailroom cannot send to, a NUL character, a
  number that is not finite or a crm_id that was erased fails that contact (named in the
  answer, contact.upserted.done), never the batch. Of two contacts with one crm_id in a
  batch the last wins.
- A contact is found by its crm_id; failing that, the contact of its address that has no
  crm_id yet (the lowest id, the one campaigns use) takes the crm_id; failing that, it is
  created. Its address and the names given replace the old ones, its attributes are added to
  those kept (null removes one).
- Lists are named; one not known yet is created (as `contacts import` does). `subscribed`
  creates a membership that does not exist and leaves an existing one as it is: an
  unsubscribed membership stays unsubscribed (the unsubscribe wins; only the person, through
  the preferences page or a signup, subscribes again). `unsubscribed` unsubscribes.
- The whole batch is a handful of statements under CONTACTS_LOCK; its new memberships are
  written to contact_announcements in the same transaction and announced after the commit as
  contacts.subscribed (one event per list), then deleted: a redelivered batch announces what
  a crash left, and a periodic sweep (the job's run) what is older than a minute.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from asyncpg.pool import PoolConnectionProxy
from mailroom_common.addresses import AddressProblem, checked_address
from mailroom_common.contacts import CONTACTS_LOCK
from mailroom_common.events import (
    ContactsSubscribed,
    ContactsUpserted,
    ContactsUpsertedDone,
    FailedContact,
    Subscription,
    UpsertedContact,
    nul_path,
)
from mailroom_common.runtime import Runtime
from pydantic import TypeAdapter

ERASED = "SELECT crm_id FROM contacts WHERE crm_id = ANY($1::text[]) AND erased_at IS NOT NULL"

# the batch's crm_ids Mailroom knows, through the index (a join on crm_id of a batch with
# contacts was planned as a hash of the whole table: 0.7 s a batch at a million contacts)
KNOWN = "SELECT crm_id FROM contacts WHERE crm_id = ANY($1::text[])"

# a crm_id Mailroom does not know takes the contact of its address that has none yet
ADOPT = f"""
UPDATE contacts c SET crm_id = a.crm_id, updated_at = now()
FROM (
    SELECT DISTINCT ON (k.id) i.crm_id, k.id
    FROM unnest($1::text[], $2::text[]) AS i(crm_id, email)
    CROSS JOIN LATERAL (
        SELECT min(x.id) AS id FROM contacts x
        WHERE lower(x.email) = lower(i.email) AND x.crm_id IS NULL AND x.erased_at IS NULL) k
    WHERE k.id IS NOT NULL AND NOT (i.crm_id = ANY(ARRAY({KNOWN})))
    ORDER BY k.id, i.crm_id
) a
WHERE c.id = a.id
"""

INPUT = """
unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    AS i(crm_id, email, first_name, last_name, attributes)
"""

# rewritten only where something differs: a batch sent again writes nothing
UPDATE_KNOWN = f"""
UPDATE contacts c SET email = i.email,
    first_name = coalesce(i.first_name, c.first_name),
    last_name = coalesce(i.last_name, c.last_name),
    attributes = jsonb_strip_nulls(c.attributes || i.attributes::jsonb),
    email_valid = true, updated_at = now()
FROM {INPUT}
WHERE c.crm_id = i.crm_id AND c.crm_id = ANY($1::text[]) AND c.erased_at IS NULL
  AND (c.email <> i.email OR c.first_name <> coalesce(i.first_name, c.first_name)
       OR c.last_name <> coalesce(i.last_name, c.last_name) OR NOT c.email_valid
       OR c.attributes <> jsonb_strip_nulls(c.attributes || i.attributes::jsonb))
"""

INSERT_NEW = f"""
INSERT INTO contacts (crm_id, email, first_name, last_name, attributes)
SELECT i.crm_id, i.email, coalesce(i.first_name, ''), coalesce(i.last_name, ''),
    jsonb_strip_nulls(i.attributes::jsonb)
FROM {INPUT}
WHERE NOT (i.crm_id = ANY(ARRAY({KNOWN})))
ON CONFLICT (crm_id) WHERE crm_id IS NOT NULL DO NOTHING
"""

CONTACT_IDS = "SELECT crm_id, id FROM contacts WHERE crm_id = ANY($1::text[])"

LISTS = """
WITH wanted AS (SELECT DISTINCT name FROM unnest($1::text[]) AS name),
made AS (
    INSERT INTO lists (name) SELECT name FROM wanted ON CONFLICT (name) DO NOTHING
    RETURNING id, name)
SELECT id, name FROM made
UNION ALL
SELECT l.id, l.name FROM lists l JOIN wanted w ON w.name = l.name
"""

# the membership's updated_at names it in the event id, as `contacts import` does
SUBSCRIBE = """
WITH wanted AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS w(contact_id, list_id)),
joined AS (
    INSERT INTO list_memberships (list_id, contact_id)
    SELECT list_id, contact_id FROM wanted
    ON CONFLICT (list_id, contact_id) DO NOTHING
    RETURNING list_id, contact_id, updated_at),
announced AS (
    INSERT INTO contact_announcements (batch, list_id, contact_id, event_id)
    SELECT $3, list_id, contact_id, concat('subscribed:', list_id, ':', contact_id, ':',
        (extract(epoch FROM updated_at) * 1e6)::bigint)
    FROM joined
    ON CONFLICT DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM announced) AS subscribed,
       (SELECT count(*) FROM list_memberships m JOIN wanted w USING (list_id, contact_id)
        WHERE m.status = 'unsubscribed') AS kept_unsubscribed
"""

UNSUBSCRIBE = """
UPDATE list_memberships m SET status = 'unsubscribed', updated_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS w(contact_id, list_id)
WHERE m.contact_id = w.contact_id AND m.list_id = w.list_id AND m.status <> 'unsubscribed'
"""

PENDING_ANNOUNCEMENTS = """
SELECT list_id, json_agg(json_build_object('contact_id', contact_id, 'event_id', event_id)
                         ORDER BY contact_id)::text AS entries
FROM contact_announcements WHERE batch = $1 GROUP BY list_id ORDER BY list_id
"""
SUBSCRIPTIONS = TypeAdapter(list[Subscription])


@dataclass
class Batch:
    """The contacts of one message that can be written, as columns."""

    crm_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    first_names: list[str | None] = field(default_factory=list)
    last_names: list[str | None] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    lists: dict[str, dict[str, str]] = field(default_factory=dict)  # crm_id -> list -> status
    failed: list[FailedContact] = field(default_factory=list)
    duplicates: int = 0

    def columns(self) -> tuple[list[str], list[str], list[str | None], list[str | None], list[str]]:
        return self.crm_ids, self.emails, self.first_names, self.last_names, self.attributes

    def drop(self, crm_ids: set[str], reason: str) -> None:
        keep = [i for i, crm_id in enumerate(self.crm_ids) if crm_id not in crm_ids]
        for name in ("crm_ids", "emails", "first_names", "last_names", "attributes"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        for crm_id in sorted(crm_ids):
            self.lists.pop(crm_id, None)
            self.failed.append(FailedContact(crm_id=crm_id, reason=reason))


def _problem(contact: UpsertedContact) -> str | None:
    where = nul_path(contact)
    if where is not None:
        return f"{where} holds a NUL character"
    for name, value in contact.attributes.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"attributes.{name}: {value} is not a finite number"
    return None


def prepare(event: ContactsUpserted) -> Batch:
    """The batch's contacts checked one by one: the last of each crm_id, those that fail
    set apart with their reason."""
    last: dict[str, UpsertedContact] = {}
    batch = Batch()
    for contact in event.contacts:
        if contact.crm_id in last:
            batch.duplicates += 1
            del last[contact.crm_id]  # in the batch's order of the one that wins
        last[contact.crm_id] = contact
    for contact in last.values():
        problem = _problem(contact)
        if problem is None:
            try:
                email = checked_address(contact.email)
            except AddressProblem as error:
                problem = f"email: {error}"
        if problem is not None:
            batch.failed.append(
                FailedContact(crm_id=contact.crm_id.replace("\x00", ""), reason=problem)
            )
            continue
        batch.crm_ids.append(contact.crm_id)
        batch.emails.append(email)
        batch.first_names.append(contact.first_name)
        batch.last_names.append(contact.last_name)
        batch.attributes.append(json.dumps(contact.attributes))
        if contact.lists:
            batch.lists[contact.crm_id] = dict(contact.lists)
    return batch


def _count(tag: str) -> int:
    return int(tag.split()[-1])


async def _memberships(
    conn: PoolConnectionProxy, batch: Batch, ids: dict[str, int], key: str, done: dict[str, int]
) -> None:
    names = sorted({name for lists in batch.lists.values() for name in lists})
    if not names:
        return
    list_ids = {r["name"]: r["id"] for r in await conn.fetch(LISTS, names)}
    pairs: dict[str, tuple[list[int], list[int]]] = {
        "subscribed": ([], []),
        "unsubscribed": ([], []),
    }
    for crm_id, lists in batch.lists.items():
        for name, status in lists.items():
            contacts, in_lists = pairs[status]
            contacts.append(ids[crm_id])
            in_lists.append(list_ids[name])
    row = await conn.fetchrow(SUBSCRIBE, *pairs["subscribed"], key)
    assert row is not None  # an aggregate: always one row
    done["subscribed"], done["kept_unsubscribed"] = row["subscribed"], row["kept_unsubscribed"]
    done["unsubscribed"] = _count(await conn.execute(UNSUBSCRIBE, *pairs["unsubscribed"]))


async def _write(conn: PoolConnectionProxy, batch: Batch, key: str) -> dict[str, int]:
    done = {"created": 0, "updated": 0, "subscribed": 0, "unsubscribed": 0, "kept_unsubscribed": 0}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CONTACTS_LOCK)
        erased = {r["crm_id"] for r in await conn.fetch(ERASED, batch.crm_ids)}
        if erased:
            batch.drop(
                erased, "erased: this crm_id's contact was erased; a new person needs a new id"
            )
        if not batch.crm_ids:
            return done
        await conn.execute(ADOPT, batch.crm_ids, batch.emails)
        await conn.execute(UPDATE_KNOWN, *batch.columns())
        done["created"] = _count(await conn.execute(INSERT_NEW, *batch.columns()))
        ids = {r["crm_id"]: r["id"] for r in await conn.fetch(CONTACT_IDS, batch.crm_ids)}
        done["updated"] = len(ids) - done["created"]
        await _memberships(conn, batch, ids, key, done)
    return done


async def announce_pending(runtime: Runtime, conn: PoolConnectionProxy, key: str) -> None:
    """The batch's new memberships still to be announced: one contacts.subscribed per list
    (at most MAX_UPSERTED_CONTACTS entries, far below its limit), then forgotten."""
    rows = await conn.fetch(PENDING_ANNOUNCEMENTS, key)
    for row in rows:
        await runtime.announce(
            ContactsSubscribed(
                list_id=row["list_id"], subscriptions=SUBSCRIPTIONS.validate_json(row["entries"])
            )
        )
    if rows:
        await conn.execute("DELETE FROM contact_announcements WHERE batch = $1", key)


# memberships of batches whose announcement did not follow their commit (a batch
# dead-lettered after it, a delivery lost with its process and not redelivered yet)
LEFT_OVER_SECONDS = 60
LEFT_OVER = """
SELECT DISTINCT batch FROM contact_announcements
WHERE created_at < now() - make_interval(secs => $1) LIMIT 100
"""


async def announce_left_over(runtime: Runtime) -> None:
    """The periodic run of sync-crm-contacts: announce what batches left unannounced for a
    minute (a redelivery announcing it too is harmless: the autoresponder makes one item per
    event_id)."""
    async with runtime.pool.acquire() as conn:
        for row in await conn.fetch(LEFT_OVER, LEFT_OVER_SECONDS):
            await announce_pending(runtime, conn, row["batch"])


async def upsert_contacts(
    runtime: Runtime, event: ContactsUpserted, body: bytes
) -> ContactsUpsertedDone:
    """Write the batch, announce its new memberships, and say what was done."""
    batch = prepare(event)
    key = hashlib.sha256(body).hexdigest()
    async with runtime.pool.acquire() as conn:
        done = await _write(conn, batch, key)
        await announce_pending(runtime, conn, key)
    return ContactsUpsertedDone(
        correlation_id=event.correlation_id,
        duplicates=batch.duplicates,
        failed=batch.failed,
        **done,
    )
