"""Autoresponders, lists, contacts and trigger events for integration tests."""

from __future__ import annotations

import asyncpg
from mailroom_common.events import Event

from mailroom.autoresponders import (
    NewAutoresponder,
    TriggerKind,
    announce_events,
    create_autoresponder,
)
from tests.support.environment import Installation
from tests.support.scenario import pool_of
from tests.support.seed import add_contacts
from tests.support.smtp import Received, SmtpServer

HTML = "<html><body><p>Welcome {{ contact.first_name }}!</p></body></html>"


async def make_list(pool: asyncpg.Pool, name: str) -> int:
    list_id: int = await pool.fetchval("INSERT INTO lists (name) VALUES ($1) RETURNING id", name)
    return list_id


async def make_contact(
    pool: asyncpg.Pool, address: str, list_id: int, status: str = "subscribed"
) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await add_contacts(conn, [(address, "Ann", "Lee")], list_id, status=status)
    contact_id: int = await pool.fetchval("SELECT id FROM contacts WHERE email = $1", address)
    return contact_id


async def make_autoresponder(
    install: Installation,
    name: str,
    *,
    trigger: TriggerKind = "contact.subscribed",
    list_name: str | None = None,
    event_type: str | None = None,
    delay_seconds: int = 0,
    enabled: bool = True,
) -> int:
    return await create_autoresponder(
        pool_of(install),
        NewAutoresponder(
            name=name,
            trigger=trigger,
            subject=f"{name} for {{{{ contact.first_name }}}}",
            html_template=HTML,
            list_name=list_name,
            event_type=event_type,
            delay_seconds=delay_seconds,
            enabled=enabled,
        ),
        install.settings,
    )


async def trigger(install: Installation, *events: Event) -> None:
    await announce_events(install.settings, events)


def received_by(smtp: SmtpServer, address: str) -> list[Received]:
    with smtp.handler.lock:
        return [r for r in smtp.handler.received if any(address in t for t in r.recipients)]
