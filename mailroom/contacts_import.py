"""Import contacts from CSV into a list: good rows imported, bad rows reported by line.

A file that cannot be imported as a whole is refused before anything is written
(`ImportRefused`): not UTF-8 text, no header naming an `email` column, a column named
twice, more than MAX_COLUMNS columns. A bad line is reported with its number and reason
and skipped, and the import goes on: an invalid address, more fields than the header,
a NUL character, a field over MAX_FIELD_BYTES, a line that is not CSV.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from asyncpg.pool import Pool
from mailroom_common.addresses import AddressProblem, checked_address
from mailroom_common.events import ContactSubscribed
from mailroom_common.settings import Settings

from mailroom.autoresponders import announce_events

KNOWN_COLUMNS = ("email", "first_name", "last_name")
IMPORT_LOCK = 0x696D706F7274  # one import at a time: contacts are matched by address
MAX_FIELD_BYTES = 10 * 1024
MAX_COLUMNS = 100
MAX_COLUMN_NAME = 100  # characters
# no line of a good file is longer; a longer one is not read into memory
MAX_LINE_BYTES = MAX_COLUMNS * (MAX_FIELD_BYTES + 3)
_LONG_LINE = "\x00mailroom: line too long\x00"  # stands for the part of a line not read
LIMITS = f"{MAX_FIELD_BYTES // 1024} KB a field, {MAX_COLUMNS} columns"


class ImportRefused(ValueError):
    """The whole file is refused; nothing was written. The message says why, for a person."""


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


def _text_lines(handle: BinaryIO, path: Path) -> Iterator[str]:
    """The file's lines as text, one per physical line (so the CSV reader's line numbers
    are the file's); a line over MAX_LINE_BYTES is cut short, not read into memory."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield _LONG_LINE + "\n"
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImportRefused(
                f"{path}: not UTF-8 text (line {number}, byte {raw[error.start]:#04x} at"
                f" column {error.start + 1}); save the file as CSV in UTF-8 and import it again"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _columns(header: list[str], path: Path) -> list[str]:
    if _LONG_LINE in header:
        raise ImportRefused(f"{path}: the header line is over {MAX_LINE_BYTES} bytes")
    names = [name.strip().lower() for name in header]
    if len(names) > MAX_COLUMNS:
        raise ImportRefused(
            f"{path}: the header names {len(names)} columns; the limit is {MAX_COLUMNS}"
        )
    for name in names:
        if len(name) > MAX_COLUMN_NAME or "\x00" in name:
            raise ImportRefused(
                f"{path}: a column name in the header is over {MAX_COLUMN_NAME} characters or"
                " holds a NUL character"
            )
    twice = [name for name, count in Counter(n for n in names if n).items() if count > 1]
    if twice:
        where = ", ".join(str(i + 1) for i, n in enumerate(names) if n == twice[0])
        raise ImportRefused(
            f"{path}: the header names column {twice[0]!r} more than once (columns {where});"
            " name each column once"
        )
    if "email" not in names:
        raise ImportRefused(f"{path}: the first line must name the columns, one of them 'email'")
    return names


def _problem(names: list[str], fields: list[str]) -> str | None:
    """Why this record cannot be imported, or None."""
    if _LONG_LINE in fields:
        return f"the line is over {MAX_LINE_BYTES} bytes (limits: {LIMITS})"
    if len(fields) > len(names):
        return "more fields than the header names"
    for name, value in zip(names, fields, strict=False):
        if "\x00" in value:
            return f"field {name!r} holds a NUL character"
        if len(value) > MAX_FIELD_BYTES // 4 and len(value.encode()) > MAX_FIELD_BYTES:
            return f"field {name!r} is over {MAX_FIELD_BYTES} bytes (limits: {LIMITS})"
    return None


def _csv_problem(error: csv.Error) -> str:
    if "field larger than field limit" in str(error):
        return f"a field is over {MAX_FIELD_BYTES} bytes (limits: {LIMITS})"
    return f"not readable as CSV: {error}"


def read_csv(path: Path, report: ImportReport) -> list[ContactRow]:
    rows: dict[str, ContactRow] = {}
    with path.open("rb") as handle:
        reader = csv.reader(_text_lines(handle, path))
        try:
            header = next(reader)
        except StopIteration:
            raise ImportRefused(f"{path}: the file is empty") from None
        except csv.Error as error:
            raise ImportRefused(f"{path}: the header line: {_csv_problem(error)}") from None
        names = _columns(header, path)
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                report.bad_rows.append((line, _csv_problem(error)))
                continue
            if not fields:
                continue  # a blank line
            problem = _problem(names, fields)
            if problem is not None:
                report.bad_rows.append((line, problem))
                continue
            values = {name: value.strip() for name, value in zip(names, fields, strict=False)}
            given = values.get("email", "")
            try:
                address = checked_address(given)
            except AddressProblem as error:
                report.bad_rows.append((line, f"invalid email {given!r}: {error}"))
                continue
            attributes = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS and k}
            rows[address.lower()] = ContactRow(
                line,
                address,
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
