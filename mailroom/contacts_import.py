"""Import contacts from CSV into a list, at COPY speed: good rows imported, bad rows reported.

1. The file streams (contacts_csv) into a temporary staging table with one binary COPY; a
   bad line is reported by number and skipped, a file refused as a whole (`ImportRefused`)
   stops the COPY before anything is written.
2. Set-based merge, in one transaction under IMPORT_LOCK: one row per address (lower case;
   the last line of an address wins), matched to the contact with that address (the
   lowest id, as campaigns do); existing contacts get the file's fields (rewritten only
   where they differ), new ones are inserted, memberships of the list created. An import
   never resubscribes someone who unsubscribed from the list.
3. After the commit, the new memberships are announced in batches: one contacts.subscribed
   event names up to ANNOUNCE_BATCH contacts (the autoresponder creates their items with
   one statement).

`dry_run` does steps 1 and 2's reading only: what would be created, updated, subscribed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from string import ascii_letters as ASCII_LETTERS

from asyncpg.pool import Pool, PoolConnectionProxy
from mailroom_common.contacts import CONTACTS_LOCK
from mailroom_common.events import ContactsSubscribed, Subscription
from mailroom_common.settings import Settings
from pydantic import TypeAdapter

from mailroom.contacts_csv import ContactsCsv, ImportRefused, Layout
from mailroom.publishing import publisher

__all__ = ["IMPORT_LOCK", "ImportProgress", "ImportRefused", "ImportReport", "import_contacts"]

IMPORT_LOCK = CONTACTS_LOCK  # one import at a time: contacts are matched by address
ANNOUNCE_BATCH = 5000  # contacts named by one contacts.subscribed event
# the merge sorts and hashes a row per line of the file, the temporary tables hold one:
# let it do so in memory (this session only; pages are taken as they are needed)
SESSION_SETTINGS = "SET work_mem = '256MB'; SET temp_buffers = '512MB'"
MERGE_STEPS = 5
TEMP_TABLES = ("import_staged", "import_known", "import_rows", "import_subscribed")


@dataclass
class ImportReport:
    list_name: str
    imported: int = 0  # distinct addresses among the good rows
    created: int = 0
    updated: int = 0  # existing contacts (by address) given the file's fields
    kept_unsubscribed: int = 0
    subscribed: int = 0  # memberships created (announced in contacts.subscribed batches)
    duplicates: int = 0  # good rows whose address a later line of the file gives again
    dry_run: bool = False
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


class ImportProgress:
    """What an import is doing, for a progress display; every method does nothing here."""

    def reading(self, done_bytes: int, total_bytes: int) -> None:
        """Bytes of the file read, validated and copied to the database so far."""

    def merging(self, step: str, done: int, total: int) -> None:
        """The merge started its step `done + 1` of `total` (done == total: finished)."""

    def announcing(self, done: int, total: int) -> None:
        """New memberships announced so far."""


def _staging_table(layout: Layout) -> str:
    attributes = "".join(f", a{i} text" for i in range(len(layout.attributes)))
    return (
        "CREATE TEMP TABLE import_staged (line integer, email text, address text, first_name text,"
        f" last_name text{attributes})"
    )


def _attributes(layout: Layout) -> str:
    """The attributes of a staged row as jsonb: a field the line lacks is left out."""
    if not layout.attributes:
        return "'{}'::jsonb"
    values = ", ".join(f"s.a{i}" for i in range(len(layout.attributes)))
    return f"jsonb_strip_nulls(jsonb_object($1::text[], ARRAY[{values}]))"


# existing contacts of the addresses in the file: the lowest id of each address
FIND_KNOWN = """
CREATE TEMP TABLE import_known AS
SELECT lower(c.email) AS address, min(c.id) AS id FROM contacts c
WHERE lower(c.email) IN (SELECT address FROM import_staged)
GROUP BY lower(c.email)
"""

# one row per address, the last line of the file wins
UNIQUE_ROWS = """
INSERT INTO import_rows (line, email, address, first_name, last_name, attributes, contact_id)
SELECT DISTINCT ON (s.address COLLATE "C") s.line, s.email, s.address,
    coalesce(s.first_name, ''), coalesce(s.last_name, ''), {attributes}, k.id
FROM import_staged s LEFT JOIN import_known k ON k.address = s.address
ORDER BY s.address COLLATE "C", s.line DESC
"""

UPDATE_EXISTING = """
UPDATE contacts c SET first_name = r.first_name, last_name = r.last_name,
    attributes = c.attributes || r.attributes, email_valid = true, updated_at = now()
FROM import_rows r
WHERE c.id = r.contact_id
  AND (c.first_name <> r.first_name OR c.last_name <> r.last_name OR NOT c.email_valid
       OR NOT c.attributes @> r.attributes)
"""

INSERT_NEW = """
WITH created AS (
    INSERT INTO contacts (email, first_name, last_name, attributes)
    SELECT email, first_name, last_name, attributes FROM import_rows WHERE contact_id IS NULL
    RETURNING id),
joined AS (
    INSERT INTO list_memberships (list_id, contact_id) SELECT $1, id FROM created
    RETURNING contact_id, updated_at)
INSERT INTO import_subscribed (contact_id, at)
SELECT contact_id, (extract(epoch FROM updated_at) * 1e6)::bigint FROM joined
"""

SUBSCRIBE_EXISTING = """
WITH joined AS (
    INSERT INTO list_memberships (list_id, contact_id)
    SELECT $1, r.contact_id FROM import_rows r
    WHERE r.contact_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM list_memberships m WHERE m.list_id = $1 AND m.contact_id = r.contact_id)
    ON CONFLICT (list_id, contact_id) DO NOTHING
    RETURNING contact_id, updated_at)
INSERT INTO import_subscribed (contact_id, at)
SELECT contact_id, (extract(epoch FROM updated_at) * 1e6)::bigint FROM joined
"""

COUNT_UNSUBSCRIBED = """
SELECT count(*) FROM list_memberships m JOIN import_rows r ON m.contact_id = r.contact_id
WHERE m.list_id = $1 AND m.status = 'unsubscribed'
"""

# a dry run: the memberships the import would create
COUNT_WOULD_SUBSCRIBE = """
SELECT count(*) FROM import_rows r
WHERE r.contact_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM list_memberships m WHERE m.list_id = $1 AND m.contact_id = r.contact_id)
"""


def _row_count(command_tag: str) -> int:
    return int(command_tag.split()[-1])


async def _stage(
    conn: PoolConnectionProxy, path: Path, report: ImportReport, progress: ImportProgress
) -> tuple[Layout, int]:
    """COPY the file's good rows into import_staged; the layout and how many rows."""
    with path.open("rb") as handle:
        total = os.fstat(handle.fileno()).st_size
        contacts = ContactsCsv(
            handle, path, report.bad_rows, lambda done: progress.reading(done, total)
        )
        layout = contacts.layout
        await conn.execute(_staging_table(layout))
        columns = ["line", "email", "address", "first_name", "last_name"]
        columns += [f"a{i}" for i in range(len(layout.attributes))]
        await conn.copy_records_to_table(
            "import_staged", records=contacts.records(), columns=columns
        )
    await conn.execute("ANALYZE import_staged")
    return layout, contacts.records_read


async def _match(
    conn: PoolConnectionProxy,
    layout: Layout,
    staged: int,
    report: ImportReport,
    progress: ImportProgress,
) -> None:
    """One row per address into import_rows, each with its existing contact, if any."""
    progress.merging("matching addresses", 0, MERGE_STEPS)
    await conn.execute(FIND_KNOWN)
    await conn.execute("ANALYZE import_known")
    progress.merging("one row per address", 1, MERGE_STEPS)
    await conn.execute(
        "CREATE TEMP TABLE import_rows (line integer, email text, address text,"
        " first_name text, last_name text, attributes jsonb, contact_id bigint)"
    )
    attributes = [layout.attributes] if layout.attributes else []
    tag = await conn.execute(UNIQUE_ROWS.format(attributes=_attributes(layout)), *attributes)
    await conn.execute("ANALYZE import_rows")
    report.imported = _row_count(tag)
    report.duplicates = staged - report.imported
    report.updated = await conn.fetchval(
        "SELECT count(*) FROM import_rows WHERE contact_id IS NOT NULL"
    )
    report.created = report.imported - report.updated


async def _merge(
    conn: PoolConnectionProxy,
    layout: Layout,
    staged: int,
    list_name: str,
    report: ImportReport,
    progress: ImportProgress,
) -> int:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK)
        list_id: int = await conn.fetchval(
            "INSERT INTO lists (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = $1"
            " RETURNING id",
            list_name,
        )
        await _match(conn, layout, staged, report, progress)
        progress.merging("updating existing contacts", 2, MERGE_STEPS)
        await conn.execute(UPDATE_EXISTING)
        await conn.execute("CREATE TEMP TABLE import_subscribed (contact_id bigint, at bigint)")
        progress.merging("creating new contacts", 3, MERGE_STEPS)
        report.created = _row_count(await conn.execute(INSERT_NEW, list_id))
        progress.merging("subscribing existing contacts", 4, MERGE_STEPS)
        existing = _row_count(await conn.execute(SUBSCRIBE_EXISTING, list_id))
        report.subscribed = report.created + existing
        report.kept_unsubscribed = await conn.fetchval(COUNT_UNSUBSCRIBED, list_id)
        progress.merging("done", MERGE_STEPS, MERGE_STEPS)
    return list_id


async def _dry_run_counts(conn: PoolConnectionProxy, list_name: str, report: ImportReport) -> None:
    list_id = await conn.fetchval("SELECT id FROM lists WHERE name = $1", list_name)
    if list_id is None:
        report.subscribed = report.imported
        return
    report.subscribed = await conn.fetchval(COUNT_WOULD_SUBSCRIBE, list_id)
    report.kept_unsubscribed = await conn.fetchval(COUNT_UNSUBSCRIBED, list_id)


# the subscriptions of each batch as JSON, made by PostgreSQL (Python would spend more
# time on a million small objects than the rest of the import takes); the membership's
# updated_at names it in the event id: a repeat of the event sends nothing more
BATCHES = """
SELECT json_agg(json_build_object('contact_id', contact_id,
    'event_id', concat('subscribed:', $1::bigint, ':', contact_id, ':', at)))::text AS entries
FROM (SELECT contact_id, at, (row_number() OVER () - 1) / $2 AS batch FROM import_subscribed) s
GROUP BY batch
"""
SUBSCRIPTIONS = TypeAdapter(list[Subscription])


async def _batches(conn: PoolConnectionProxy, list_id: int) -> AsyncIterator[ContactsSubscribed]:
    async with conn.transaction():
        async for row in conn.cursor(BATCHES, list_id, ANNOUNCE_BATCH, prefetch=1):
            # the entries are checked (pydantic-core, from JSON); the event around them is
            # made of a checked id
            yield ContactsSubscribed.model_construct(
                list_id=list_id, subscriptions=SUBSCRIPTIONS.validate_json(row["entries"])
            )


async def _announce(
    conn: PoolConnectionProxy,
    settings: Settings,
    list_id: int,
    total: int,
    progress: ImportProgress,
) -> None:
    done = 0
    progress.announcing(done, total)
    async with publisher(settings) as publish:
        sending: asyncio.Future[None] | None = None  # the last batch, while the next is read
        async for event in _batches(conn, list_id):
            if sending is not None:
                await sending
                progress.announcing(done, total)
            sending = asyncio.ensure_future(publish(event))
            done += len(event.subscriptions)
        if sending is not None:
            await sending
            progress.announcing(done, total)


async def _drop_temp_tables(conn: PoolConnectionProxy) -> None:
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TEMP_TABLES)}")
    except Exception:  # e.g. an aborted COPY's cancel arrived late: the pool replaces it
        conn.terminate()


async def import_contacts(
    pool: Pool,
    path: Path,
    list_name: str,
    settings: Settings | None = None,
    *,
    dry_run: bool = False,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """With `settings`, the memberships created are announced (contacts.subscribed, after
    the commit) so autoresponders of the list fire."""
    progress = progress or ImportProgress()
    report = ImportReport(list_name=list_name, dry_run=dry_run)
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT lower($1) = $2", ASCII_LETTERS, ASCII_LETTERS.lower()):
            raise ImportRefused(
                "the database lower-cases ASCII letters unlike Python (its LC_CTYPE):"
                " addresses could not be matched"
            )
        await conn.execute(SESSION_SETTINGS)
        try:
            layout, staged = await _stage(conn, path, report, progress)
            if dry_run:
                await _match(conn, layout, staged, report, progress)
                await _dry_run_counts(conn, list_name, report)
                progress.merging("done", MERGE_STEPS, MERGE_STEPS)
                return report
            list_id = await _merge(conn, layout, staged, list_name, report, progress)
            if settings is not None and report.subscribed:
                await _announce(conn, settings, list_id, report.subscribed, progress)
        finally:
            await _drop_temp_tables(conn)
    return report
