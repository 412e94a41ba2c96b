"""The asyncpg pool; a missing database is an error naming the setting, created only when asked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import Pool

from mailroom_common.settings import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class MissingDatabase(Exception):
    """The database named by MAILROOM_DATABASE_URL does not exist."""

    def __init__(self, database_url: str) -> None:
        name = urlsplit(database_url).path.lstrip("/")
        super().__init__(
            f"database {name!r} does not exist (MAILROOM_DATABASE_URL); check the URL, or"
            " create it with `mailroom migrate --create-database`"
        )


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection; `MissingDatabase` when the database does not exist."""
    try:
        return await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        raise MissingDatabase(database_url) from None


async def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if it does not exist (several callers may race)."""
    url = urlsplit(database_url)
    database = url.path.lstrip("/")
    if not database:
        raise ValueError("the database URL names no database (…/DATABASE at its end)")
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    admin_url = urlunsplit(url._replace(path="/postgres"))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(database)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another replica created it first (the second error when both raced the catalog)
    finally:
        await admin.close()


async def create_pool(settings: Settings, *, min_size: int = 1) -> Pool:
    try:
        pool: Pool | None = await asyncpg.create_pool(
            settings.database_url,
            min_size=min_size,
            max_size=settings.database_pool_size,
            init=_init_connection,
            command_timeout=60,
            # JIT compiles a statement whose estimate looks big (a generic plan of the sender's
            # checks at a million items): 0.6-1 s of CPU per statement, for rows read in 1 ms.
            server_settings={"jit": "off"},
        )
    except asyncpg.InvalidCatalogNameError:
        raise MissingDatabase(settings.database_url) from None
    assert pool is not None
    return pool


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def records_to_dicts(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]
