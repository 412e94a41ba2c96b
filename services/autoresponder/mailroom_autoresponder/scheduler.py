"""Due autoresponder items -> rendered emails on the priority lane.

Due pending items are claimed with FOR UPDATE SKIP LOCKED (any number of replicas), checked
(suppressed, unsubscribed, disabled, invalid address), rendered with the campaign rendering
code and published in batches of MAILROOM_BATCH_SIZE to `outbound.priority`; they become
queued in the same transaction, after the broker confirmed the batch. A crash before the
commit leaves them pending: they are rendered and published again, and the sender claims
each item once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from mailroom_common.broker import PRIORITY_ROUTING_KEY
from mailroom_common.events import OutboundBatch, OutboundEmail
from mailroom_common.metrics import EMAILS_RENDERED, RENDER_FAILURES
from mailroom_common.outbound import render_outbound, sending_for
from mailroom_common.rendering import CompiledMessage, RecipientProblem, TemplateProblem
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import MarketingSettings, SmtpAccount

from mailroom_autoresponder.content import compile_autoresponder

log = logging.getLogger(__name__)

# The verdict of each due item: NULL (send), or 'skipped:...' / 'suppressed:...'.
CLAIM_DUE = """
SELECT i.id, i.autoresponder_id, i.contact_id, i.email,
       c.first_name, c.last_name, c.attributes,
       CASE
         WHEN EXISTS (SELECT 1 FROM suppressions s WHERE s.email = lower(i.email))
           THEN 'suppressed:address suppressed'
         WHEN NOT a.enabled THEN 'skipped:autoresponder disabled'
         WHEN NOT c.email_valid OR NOT mailroom_address_ok(i.email)
           THEN 'skipped:invalid address'
         WHEN a.trigger_kind = 'contact.subscribed' AND NOT EXISTS (
             SELECT 1 FROM list_memberships m
             WHERE m.list_id = a.list_id AND m.contact_id = i.contact_id
               AND m.status = 'subscribed')
           THEN 'skipped:not subscribed to the list'
         WHEN a.trigger_kind = 'contact.event'
              AND EXISTS (SELECT 1 FROM list_memberships m WHERE m.contact_id = i.contact_id)
              AND NOT EXISTS (SELECT 1 FROM list_memberships m
                              WHERE m.contact_id = i.contact_id AND m.status = 'subscribed')
           THEN 'skipped:unsubscribed from every list'
       END AS verdict
FROM autoresponder_items i
JOIN autoresponders a ON a.id = i.autoresponder_id
JOIN contacts c ON c.id = i.contact_id
WHERE i.status = 'pending' AND i.due_at <= now()
ORDER BY i.due_at, i.id
LIMIT $1
FOR UPDATE OF i SKIP LOCKED
"""

CLOSE_ITEMS = """
UPDATE autoresponder_items i SET status = f.status, error = f.error
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS f(id, status, error)
WHERE i.id = f.id AND i.status = 'pending'
"""


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._compiled: dict[tuple[int, Any, int, int], CompiledMessage] = {}

    async def run_due(self) -> None:
        """Hand over every due item, a batch at a time."""
        while await self._next_batch():
            pass

    async def _next_batch(self) -> bool:
        """One batch; True when it was full (more may be due)."""
        runtime = self.runtime
        size = runtime.settings.batch_size
        async with runtime.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_DUE, size)
            if not rows:
                return False
            closed: dict[int, tuple[str, str]] = {}
            sendable: list[Record] = []
            for row in rows:
                if row["verdict"] is None:
                    sendable.append(row)
                else:
                    status, _, reason = row["verdict"].partition(":")
                    closed[row["id"]] = (status, reason)
            if sendable:
                emails = await self._render(conn, sendable, closed)
                if emails:
                    await runtime.send_work(
                        OutboundBatch(kind="autoresponder", emails=emails),
                        routing_key=PRIORITY_ROUTING_KEY,
                    )
                    await conn.execute(
                        "UPDATE autoresponder_items SET status = 'queued' WHERE id = ANY($1)",
                        [e.item_id for e in emails],
                    )
            if closed:
                await conn.execute(
                    CLOSE_ITEMS,
                    list(closed),
                    [s for s, _ in closed.values()],
                    [r for _, r in closed.values()],
                )
        return len(rows) == size

    async def _render(
        self,
        conn: PoolConnectionProxy,
        rows: list[Record],
        closed: dict[int, tuple[str, str]],
    ) -> list[OutboundEmail]:
        store = self.runtime.settings_store
        marketing, marketing_version = await store.load(MarketingSettings)
        account, account_version = await store.load(SmtpAccount)
        definitions = {
            r["id"]: dict(r)
            for r in await conn.fetch(
                "SELECT * FROM autoresponders WHERE id = ANY($1)",
                list({row["autoresponder_id"] for row in rows}),
            )
        }
        # compiling and rendering run in a worker thread: a slow template (stopped by the
        # renderer's time limit) never blocks the event loop
        return await asyncio.to_thread(
            self._render_rows,
            rows,
            definitions,
            marketing,
            (marketing_version, account_version),
            account,
            closed,
        )

    def _render_rows(
        self,
        rows: list[Record],
        definitions: dict[int, dict[str, Any]],
        marketing: MarketingSettings,
        versions: tuple[int, int],
        account: SmtpAccount,
        closed: dict[int, tuple[str, str]],
    ) -> list[OutboundEmail]:
        signer = self.runtime.signer
        marketing_version, account_version = versions
        base_url = marketing.public_base_url.rstrip("/")
        emails: list[OutboundEmail] = []
        for row in rows:
            definition = definitions[row["autoresponder_id"]]
            key = (definition["id"], definition["updated_at"], marketing_version, account_version)
            try:
                compiled = self._compiled.get(key)
                if compiled is None:
                    if len(self._compiled) > 256:
                        self._compiled.clear()
                    compiled = compile_autoresponder(definition, marketing, account)
                    self._compiled[key] = compiled
            except TemplateProblem as problem:
                RENDER_FAILURES.labels("autoresponder").inc()
                closed[row["id"]] = ("failed", f"template problem: {problem}"[:2000])
                continue
            from_email = definition["from_email"] or account.from_email
            sending = sending_for(account, from_email, self.runtime.settings)
            try:
                email = render_outbound(
                    compiled,
                    row,
                    item_ref=f"a{row['id']}",
                    source=f"a{definition['id']}",
                    base_url=base_url,
                    signer=signer,
                    sending=sending,
                )
            except RecipientProblem as problem:
                RENDER_FAILURES.labels("recipient").inc()
                closed[row["id"]] = ("failed", f"rendering failed: {problem}"[:2000])
                continue
            emails.append(email)
        EMAILS_RENDERED.labels("autoresponder").inc(len(emails))
        return emails
