"""Import contacts from CSV into a list: good rows imported, bad rows reported by line."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from asyncpg.pool import Pool
from email_validator import EmailNotValidError, validate_email
from mailroom_common.events import ContactSubscribed
from mailroom_common.settings import Settings

from mailroom.autoresponders import announce_events

KNOWN_COLUMNS = ("email", "first_name", "last_name")
IMPORT_LOCK = 0x696D706F7274  # one import at a time: contacts are matched by address


@dataclass
class ImportReport:
    list_name: str
    imported: int = 0
    created: int = 0
    updated: int = 0
    kept_unsubscribed: int = 0
    subscribed: int = 0  # memberships created (each announced as contact.subscribed)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ContactRow:
    line: int
    email: str
    first_name: str
    last_name: str
    attributes: dict[str, str]


def read_csv(path: Path, report: ImportReport) -> list[ContactRow]:
    rows: dict[str, ContactRow] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "email" not in [
            f.strip().lower() for f in reader.fieldnames
        ]:
            raise ValueError(f"{path}: the first line must name the columns, one of them 'email'")
        for record in reader:
            line = reader.line_num
            values = {
                (k or "").strip().lower(): (v or "").strip()
                for k, v in record.items()
                if isinstance(v, str)
            }
            if None in record:
                report.bad_rows.append((line, "more fields than the header names"))
                continue
            try:
                address = validate_email(values.get("email", ""), check_deliverability=False)
            except EmailNotValidError as error:
                report.bad_rows.append(
                    (line, f"invalid email {values.get('email', '')!r}: {error}")
                )
                continue
            attributes = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS and k}
            rows[address.normalized.lower()] = ContactRow(
                line,
                address.normalized,
                values.get("first_name", ""),
                values.get("last_name", ""),
                attributes,
            )
    return list(rows.values())


UPDATE_EXISTING = """
WITH existing AS (
    SELECT DISTINCT ON (lower(email)) id, lower(email) AS address FROM contacts
    WHERE lower(email) IN (SELECT lower(email) FROM import_rows)
    ORDER BY lower(email), id)
UPDATE contacts c SET first_name = r.first_name, last_name = r.last_name,
    attributes = c.attributes || r.attributes::jsonb, email_valid = true, updated_at = now()
FROM import_rows r JOIN existing e ON e.address = lower(r.email)
WHERE c.id = e.id
"""

INSERT_NEW = """
INSERT INTO contacts (email, first_name, last_name, attributes)
SELECT r.email, r.first_name, r.last_name, r.attributes::jsonb FROM import_rows r
WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE lower(c.email) = lower(r.email))
"""


def _row_count(command_tag: str) -> int:
    return int(command_tag.split()[-1])


async def import_contacts(
    pool: Pool, path: Path, list_name: str, settings: Settings | None = None
) -> ImportReport:
    """With `settings`, every membership created is announced as contact.subscribed (after
    the commit) so autoresponders of the list fire."""
    report = ImportReport(list_name=list_name)
    rows = read_csv(path, report)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK)
        list_id = await conn.fetchval(
            "INSERT INTO lists (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = $1"
            " RETURNING id",
            list_name,
        )
        await conn.execute(
            "CREATE TEMP TABLE import_rows (email text, first_name text, last_name text,"
            " attributes text) ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "import_rows",
            records=[(r.email, r.first_name, r.last_name, json.dumps(r.attributes)) for r in rows],
        )
        report.updated = _row_count(await conn.execute(UPDATE_EXISTING))
        report.created = _row_count(await conn.execute(INSERT_NEW))
        created = await conn.fetch(
            "INSERT INTO list_memberships (list_id, contact_id)"
            " SELECT DISTINCT ON (lower(c.email)) $1::bigint, c.id FROM contacts c"
            " JOIN import_rows r ON lower(c.email) = lower(r.email)"
            " ORDER BY lower(c.email), c.id"
            " ON CONFLICT (list_id, contact_id) DO NOTHING"
            " RETURNING contact_id, (extract(epoch FROM updated_at) * 1e6)::bigint AS at",
            list_id,
        )
        # An import never resubscribes someone who unsubscribed from the list.
        report.kept_unsubscribed = await conn.fetchval(
            "SELECT count(*) FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
            " JOIN import_rows r ON lower(c.email) = lower(r.email)"
            " WHERE m.list_id = $1 AND m.status = 'unsubscribed'",
            list_id,
        )
    report.imported = len(rows)
    report.subscribed = len(created)
    if settings is not None and created:
        # the event id names this membership: a repeat of the event sends nothing more
        await announce_events(
            settings,
            [
                ContactSubscribed(
                    contact_id=r["contact_id"],
                    list_id=list_id,
                    event_id=f"subscribed:{list_id}:{r['contact_id']}:{r['at']}",
                )
                for r in created
            ],
        )
    return report
