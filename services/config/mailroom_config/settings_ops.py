"""What the admin API and the console both do with the settings: a group's view, a change
(merged, validated, versioned, announced), its history, the two test actions. Each takes the
runtime and returns a model; the API answers it as JSON, the console renders it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from mailroom_common.events import SettingsChanged
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import (
    BounceMailbox,
    MarketingSettings,
    SettingsStore,
    SmtpAccount,
)
from pydantic import BaseModel, Field

from mailroom_config import checks
from mailroom_config.groups import FieldProblem, Invalid, merge, plain, public, read_only

log = logging.getLogger(__name__)

DEFAULT_ACTOR = "admin"
MAX_ACTOR_LENGTH = 200


class GroupView(BaseModel):
    group: str
    version: int = Field(description="0: never changed, the defaults.")
    updated_by: str | None
    updated_at: datetime | None
    settings: dict[str, Any] = Field(
        description='Editable settings; a password shows "********" when set, "" when not.'
    )
    read_only: dict[str, Any] = Field(
        description="Shown, never changed here (deployment settings, facts about the group)."
    )


class ChangeResult(BaseModel):
    group: str
    changed: bool
    version: int
    changed_keys: list[str]
    message: str
    announced: bool = Field(description="settings.changed was published (False: nothing to say).")
    settings: dict[str, Any]


class HistoryEntry(BaseModel):
    version: int
    changed_keys: list[str]
    changed_by: str
    changed_at: datetime


class History(BaseModel):
    group: str
    entries: list[HistoryEntry] = Field(description="Newest first.")


class ActionResult(BaseModel):
    ok: bool
    reply: str = Field(description="The server's reply, or what went wrong.")


def actor_name(value: str | None, field: str = "X-Mailroom-Actor") -> str:
    """Who makes a change, as the history records it; Invalid when it cannot be recorded."""
    actor = (value or "").strip()
    if not actor:
        return DEFAULT_ACTOR
    if len(actor) > MAX_ACTOR_LENGTH or not actor.isprintable():
        raise Invalid(
            [
                FieldProblem(
                    field, f"at most {MAX_ACTOR_LENGTH} printable characters (who made the change)"
                )
            ]
        )
    return actor


async def load_group(store: SettingsStore, group: str) -> tuple[BaseModel, int]:
    if group == "smtp":
        return await store.load(SmtpAccount)
    if group == "marketing":
        return await store.load(MarketingSettings)
    return await store.load(BounceMailbox)


async def group_view(runtime: Runtime, group: str) -> GroupView:
    value, version = await load_group(runtime.settings_store, group)
    row = await runtime.pool.fetchrow(
        "SELECT updated_by, updated_at FROM settings WHERE group_name = $1", group
    )
    return GroupView(
        group=group,
        version=version,
        updated_by=row["updated_by"] if row else None,
        updated_at=row["updated_at"] if row else None,
        settings=public(value),
        read_only=read_only(group, runtime.settings),
    )


async def change_group(
    runtime: Runtime, group: str, changes: dict[str, Any], actor: str
) -> ChangeResult:
    """Merge `changes` into the group, validate the whole, store it as a new version by
    `actor` and announce settings.changed. Raises Invalid (422) or ReadOnly (409)."""
    # one change of a group at a time (across replicas): no lost update, exact diff
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"mailroom.settings.{group}"
        )
        current_value, version = await load_group(runtime.settings_store, group)
        # off the event loop: checking the footers compiles and trial-renders them
        new_value = await asyncio.to_thread(merge, group, current_value, changes, runtime.settings)
        if plain(new_value) == plain(current_value):
            return ChangeResult(
                group=group,
                changed=False,
                version=version,
                changed_keys=[],
                message=f"nothing changed: still version {version}, no event published",
                announced=False,
                settings=public(current_value),
            )
        version, changed_keys = await runtime.settings_store.save(new_value, changed_by=actor)
        log.info(
            "settings %s changed to version %d by %s: %s",
            group,
            version,
            actor,
            ", ".join(changed_keys),
        )
        # announced while still holding the lock: the events go out in version order
        announced = True
        try:
            event = {"group": group, "version": version, "changed_keys": changed_keys}
            await runtime.announce(SettingsChanged.model_validate(event))
        except Exception as error:
            announced = False
            log.error(
                "settings %s version %d is stored but settings.changed was not published"
                " (%s): services see it when they restart or on the next change",
                group,
                version,
                type(error).__name__,
            )
    message = f"stored as version {version}"
    if not announced:
        message += (
            "; settings.changed could not be published: running services see it when"
            " they restart or on the next change"
        )
    return ChangeResult(
        group=group,
        changed=True,
        version=version,
        changed_keys=changed_keys,
        message=message,
        announced=announced,
        settings=public(new_value),
    )


async def history(
    runtime: Runtime, group: str | None, limit: int
) -> list[tuple[str, HistoryEntry]]:
    """(group, entry) of the changes of `group` (None: of every group), newest first."""
    rows = await runtime.pool.fetch(
        "SELECT group_name, version, changed_keys, changed_by, changed_at FROM settings_history"
        " WHERE $1::text IS NULL OR group_name = $1 ORDER BY changed_at DESC, version DESC"
        " LIMIT $2",
        group,
        limit,
    )
    return [
        (row["group_name"], HistoryEntry(**{k: row[k] for k in HistoryEntry.model_fields}))
        for row in rows
    ]


async def test_smtp(runtime: Runtime, to: str) -> ActionResult:
    """A test email to `to` (an address already validated) through the global account."""
    account, _ = await runtime.settings_store.load(SmtpAccount)
    result = await checks.send_test_email(account, to)
    log.info("test email via %s:%d: %s", account.host, account.port, result.reply)
    return ActionResult(ok=result.ok, reply=result.reply)


async def test_imap(runtime: Runtime) -> ActionResult:
    mailbox, _ = await runtime.settings_store.load(BounceMailbox)
    result = await checks.check_mailbox(mailbox)
    log.info("bounce mailbox check %s:%d: %s", mailbox.host, mailbox.port, result.reply)
    return ActionResult(ok=result.ok, reply=result.reply)
