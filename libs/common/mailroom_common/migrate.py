"""Applies the SQL files in migrations/ in order, once each; tells whether a schema is current.

Only `mailroom migrate` (the Kubernetes migration Job, compose's migrate step), `make demo`,
the tests and a service started with MAILROOM_MIGRATE_ON_START=true migrate. Several may
run at once: an advisory lock lets one apply while the others wait, then find nothing left.
"""

from __future__ import annotations

import logging
from importlib import resources

from mailroom_common.db import connect, ensure_database

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6D61696C726F6F6D  # "mailroom"


class SchemaOutdated(Exception):
    """The database lacks migrations this code needs."""


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("mailroom_common") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


async def migrate(database_url: str, *, create_database: bool = False) -> list[str]:
    """Apply pending migrations; return those applied. A missing database is created only
    with `create_database`, else `db.MissingDatabase` (a mistyped URL must not silently
    give an empty database)."""
    if create_database:
        await ensure_database(database_url)
    conn = await connect(database_url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                log.info("applied migration %s", version)
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied


async def pending_migrations(database_url: str) -> list[str]:
    """The packaged migrations the database has not applied (all of them on an empty one)."""
    conn = await connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        done = (
            {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
    finally:
        await conn.close()
    return [version for version, _ in migration_files() if version not in done]


async def require_current_schema(database_url: str) -> None:
    """Raise `SchemaOutdated` naming what to run when migrations are pending."""
    pending = await pending_migrations(database_url)
    if pending:
        raise SchemaOutdated(
            f"the database schema is older than this code ({len(pending)} migration(s) not"
            f" applied: {', '.join(pending)}); run `mailroom migrate` first (or start with"
            " MAILROOM_MIGRATE_ON_START=true)"
        )
