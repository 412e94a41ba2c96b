"""Applies the SQL files in migrations/ in order, once each.

Several replicas may start at once: an advisory lock lets one apply while the others wait,
then find nothing left to do.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from mailroom_common.db import ensure_database

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6D61696C726F6F6D  # "mailroom"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("mailroom_common") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


async def migrate(database_url: str) -> list[str]:
    """Create the database if missing and apply pending migrations; return those applied."""
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url)
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
