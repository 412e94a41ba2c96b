"""Contacts, lists and campaigns for integration tests, written as the CRM would."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount
from mailroom_common.settings import Settings

from mailroom.campaigns import NewCampaign, create_campaign

HTML = """<html><head><style>p { color: #333; }</style></head><body>
<h1>Hello {{ contact.first_name }}!</h1>
<p>News for {{ contact.email }} from {{ campaign.name }}.</p>
</body></html>"""
TEXT = "Hello {{ contact.first_name }}!\nNews for {{ contact.email }}."


@dataclass
class Audience:
    list_names: list[str]
    eligible: set[str] = field(default_factory=set)
    suppressed: set[str] = field(default_factory=set)
    unsubscribed: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    duplicates: int = 0


async def add_contacts(
    conn: PoolConnectionProxy,
    rows: list[tuple[str, str, str]],
    list_id: int,
    status: str = "subscribed",
    valid: bool = True,
) -> None:
    ids = await conn.fetch(
        "INSERT INTO contacts (email, first_name, last_name, email_valid)"
        " SELECT e, f, l, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS t(e, f, l)"
        " RETURNING id",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        valid,
    )
    await conn.executemany(
        "INSERT INTO list_memberships (list_id, contact_id, status) VALUES ($1, $2, $3)",
        [(list_id, r["id"], status) for r in ids],
    )


async def make_audience(pool: asyncpg.Pool, eligible: int, tag: str = "news") -> Audience:
    """`eligible` subscribers plus contacts that must get nothing: suppressed, unsubscribed,
    invalid, and duplicates of eligible addresses (other case, or on the second list)."""
    audience = Audience(list_names=[f"{tag}-a", f"{tag}-b"])
    async with pool.acquire() as conn, conn.transaction():
        list_a = await conn.fetchval(
            "INSERT INTO lists (name) VALUES ($1) RETURNING id", f"{tag}-a"
        )
        list_b = await conn.fetchval(
            "INSERT INTO lists (name) VALUES ($1) RETURNING id", f"{tag}-b"
        )
        good = [
            (f"user{i:06d}@{tag}.example.test", f"First{i}", f"Last{i}") for i in range(eligible)
        ]
        audience.eligible = {r[0] for r in good}
        await add_contacts(conn, good[: eligible // 2], list_a)
        await add_contacts(conn, good[eligible // 2 :], list_b)
        # the same people again: upper-cased on list A, and on list B as well
        dup_case = [(r[0].upper(), r[1], r[2]) for r in good[:10]]
        await add_contacts(conn, dup_case, list_a)
        await add_contacts(conn, good[eligible // 2 : eligible // 2 + 10], list_a)
        audience.duplicates = 20
        suppressed = [(f"suppressed{i}@{tag}.example.test", "S", "") for i in range(15)]
        await add_contacts(conn, suppressed, list_a)
        await conn.executemany(
            "INSERT INTO suppressions (email, reason) VALUES ($1, 'hard_bounce')",
            [(r[0],) for r in suppressed],
        )
        audience.suppressed = {r[0] for r in suppressed}
        unsubscribed = [(f"gone{i}@{tag}.example.test", "U", "") for i in range(15)]
        await add_contacts(conn, unsubscribed, list_b, status="unsubscribed")
        audience.unsubscribed = {r[0] for r in unsubscribed}
        invalid = [("not-an-address", "I", ""), ("two@@example.test", "I", ""), ("", "I", "")]
        await add_contacts(conn, invalid, list_a)
        await add_contacts(conn, [(f"flagged@{tag}.example.test", "I", "")], list_b, valid=False)
        audience.invalid = {r[0] for r in invalid} | {f"flagged@{tag}.example.test"}
    return audience


async def use_smtp_server(pool: asyncpg.Pool, port: int, **changes: object) -> None:
    account = SmtpAccount.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "pool_size": 4, **changes}
    )
    await SettingsStore(pool, Settings().settings_key).save(account, changed_by="tests")


async def make_campaign(pool: asyncpg.Pool, audience: Audience, name: str = "Autumn news") -> int:
    return await create_campaign(
        pool,
        NewCampaign(
            name=name,
            subject="News for {{ contact.first_name }}",
            from_email="news@mailroom.test",
            from_name="Mailroom News",
            html_template=HTML,
            text_template=TEXT,
            lists=audience.list_names,
        ),
        Settings(),
    )
