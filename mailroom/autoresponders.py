"""Autoresponder definitions (the CLI's side of the database) and trigger events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from asyncpg.pool import Pool
from mailroom_autoresponder.public import compile_autoresponder
from mailroom_common.events import Event
from mailroom_common.rendering import TemplateProblem
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore, SmtpAccount
from mailroom_common.settings import Settings

from mailroom.publishing import publisher

TriggerKind = Literal["contact.subscribed", "contact.event"]
MAX_DELAY_SECONDS = 365 * 86400


class AutoresponderProblem(ValueError):
    """A request a person must correct; str() says how."""


@dataclass(frozen=True)
class NewAutoresponder:
    name: str
    trigger: TriggerKind
    subject: str
    html_template: str
    text_template: str | None = None
    list_name: str | None = None  # contact.subscribed
    event_type: str | None = None  # contact.event
    delay_seconds: int = 0
    from_name: str | None = None
    from_email: str | None = None
    reply_to: str | None = None
    enabled: bool = True


def parse_delay(text: str) -> int:
    """Seconds from "90", "90s", "15m", "2h", "3d" (0 to a year)."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = int(float(number) * factor)
    except ValueError as error:
        raise AutoresponderProblem(
            f"invalid delay {text!r}: use seconds, or a number with s, m, h or d"
        ) from error
    if not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise AutoresponderProblem("the delay must be between 0 and 365 days")
    return seconds


async def create_autoresponder(pool: Pool, new: NewAutoresponder, settings: Settings) -> int:
    if new.trigger == "contact.subscribed" and (not new.list_name or new.event_type):
        raise AutoresponderProblem("a contact.subscribed autoresponder needs --list (only)")
    if new.trigger == "contact.event" and (not new.event_type or new.list_name):
        raise AutoresponderProblem("a contact.event autoresponder needs --event-type (only)")
    if not 0 <= new.delay_seconds <= MAX_DELAY_SECONDS:
        raise AutoresponderProblem("the delay must be between 0 and 365 days")
    store = SettingsStore(pool, settings.settings_key)
    marketing, _ = await store.load(MarketingSettings)
    account, _ = await store.load(SmtpAccount)
    definition = {
        "id": 0,
        "name": new.name,
        "subject": new.subject,
        "html_template": new.html_template,
        "text_template": new.text_template,
        "from_name": new.from_name,
        "from_email": new.from_email,
        "reply_to": new.reply_to,
    }
    try:
        compile_autoresponder(definition, marketing, account)
    except TemplateProblem as problem:
        raise AutoresponderProblem(str(problem)) from problem
    async with pool.acquire() as conn, conn.transaction():
        list_id = None
        if new.list_name is not None:
            list_id = await conn.fetchval("SELECT id FROM lists WHERE name = $1", new.list_name)
            if list_id is None:
                raise AutoresponderProblem(f"unknown list: {new.list_name}")
        if await conn.fetchval("SELECT 1 FROM autoresponders WHERE name = $1", new.name):
            raise AutoresponderProblem(f"an autoresponder named {new.name!r} exists already")
        autoresponder_id: int = await conn.fetchval(
            "INSERT INTO autoresponders (name, trigger_kind, list_id, event_type, delay_seconds,"
            " subject, from_name, from_email, reply_to, html_template, text_template, enabled)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            new.name,
            new.trigger,
            list_id,
            new.event_type,
            new.delay_seconds,
            new.subject,
            new.from_name,
            new.from_email,
            new.reply_to,
            new.html_template,
            new.text_template,
            new.enabled,
        )
    return autoresponder_id


async def list_autoresponders(pool: Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT a.id, a.name, a.trigger_kind AS trigger, l.name AS list, a.event_type,"
        " a.delay_seconds, a.subject, a.enabled,"
        " (SELECT count(*) FROM autoresponder_items i WHERE i.autoresponder_id = a.id"
        "  AND i.status = 'sent') AS sent,"
        " (SELECT count(*) FROM autoresponder_items i WHERE i.autoresponder_id = a.id"
        "  AND i.status IN ('pending', 'queued', 'sending', 'retry')) AS waiting"
        " FROM autoresponders a LEFT JOIN lists l ON l.id = a.list_id ORDER BY a.id"
    )
    return [dict(r) for r in rows]


async def set_enabled(pool: Pool, autoresponder_id: int, enabled: bool) -> bool:
    """False when there is no such autoresponder. Items already created for a disabled
    autoresponder are skipped when they fall due."""
    found = await pool.fetchval(
        "UPDATE autoresponders SET enabled = $2, updated_at = now() WHERE id = $1 RETURNING id",
        autoresponder_id,
        enabled,
    )
    return found is not None


async def announce_events(settings: Settings, events: Sequence[Event]) -> None:
    if not events:
        return
    async with publisher(settings) as publish:
        for event in events:
            await publish(event)
