"""A bounded pool of SMTP connections to the global account, and one send per email.

Outcomes follow RFC 5321 reply classes: 2yz sent, 4yz (and any connection trouble) a
temporary failure to retry later, 5yz a permanent failure with the reply kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from mailroom_common.events import OutboundEmail
from mailroom_common.metrics import SMTP_SEND_SECONDS
from mailroom_common.runtime_settings import SmtpAccount

log = logging.getLogger(__name__)

SMTP_OK_CLASS = 2
SMTP_TRANSIENT_CLASS = 4
SERVICE_CLOSING = 421


@dataclass(frozen=True)
class Outcome:
    item_id: int
    status: Literal["sent", "retry", "failed"]
    smtp_code: int | None
    smtp_reply: str


def _outcome_for_reply(item_id: int, code: int, message: str) -> Outcome:
    reply = f"{code} {message}".strip()
    if code // 100 == SMTP_OK_CLASS:
        return Outcome(item_id, "sent", code, reply)
    if code // 100 == SMTP_TRANSIENT_CLASS:
        return Outcome(item_id, "retry", code, reply)
    return Outcome(item_id, "failed", code, reply)


class SmtpPool:
    def __init__(self, account: SmtpAccount) -> None:
        self.account = account
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(account.pool_size)
        self._closed = False

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.account.verify_certificates:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _connect(self) -> aiosmtplib.SMTP:
        account = self.account
        client = aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            use_tls=account.security == "tls",
            start_tls=account.security == "starttls",
            tls_context=self._tls_context() if account.security != "none" else None,
            timeout=account.timeout_seconds,
        )
        await client.connect()
        if account.username:
            await client.login(account.username, account.password.get_secret_value())
        return client

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[list[aiosmtplib.SMTP | None]]:
        """One of `pool_size` connection slots; the holder may replace or drop the client."""
        async with self._slots:
            holder: list[aiosmtplib.SMTP | None] = [self._idle.pop() if self._idle else None]
            try:
                yield holder
            finally:
                client = holder[0]
                if client is not None and client.is_connected:
                    if self._closed:  # retired while this send was in flight
                        await self._quit(client)
                    else:
                        self._idle.append(client)

    async def send_all(self, emails: list[OutboundEmail]) -> list[Outcome]:
        """Send each email once over up to `pool_size` connections; one outcome per email."""
        waiting = deque(emails)
        outcomes: list[Outcome] = []

        async def worker() -> None:
            async with self._slot() as holder:
                while waiting:
                    email = waiting.popleft()
                    outcomes.append(await self._send_one(holder, email))

        workers = min(self.account.pool_size, len(emails))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return outcomes

    async def _send_one(
        self, holder: list[aiosmtplib.SMTP | None], email: OutboundEmail
    ) -> Outcome:
        reused = holder[0] is not None
        for _try in range(2):
            try:
                client = holder[0]
                if client is None:
                    client = holder[0] = await self._connect()
                started = time.perf_counter()
                _errors, reply = await client.sendmail(
                    email.envelope_from, [email.recipient], email.message.encode("ascii")
                )
                SMTP_SEND_SECONDS.observe(time.perf_counter() - started)
                return Outcome(email.item_id, "sent", 250, reply)
            except aiosmtplib.SMTPRecipientsRefused as error:
                refused = error.recipients[0]
                return _outcome_for_reply(email.item_id, refused.code, refused.message)
            except aiosmtplib.SMTPResponseException as error:
                if error.code == SERVICE_CLOSING:
                    await self._drop(holder)
                return _outcome_for_reply(email.item_id, error.code, error.message)
            except aiosmtplib.SMTPServerDisconnected as error:
                await self._drop(holder)
                if reused and _try == 0:
                    reused = False  # an idle connection the server had closed: try a fresh one
                    continue
                return Outcome(email.item_id, "retry", None, f"connection lost: {error}")
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                await self._drop(holder)
                return Outcome(email.item_id, "retry", None, f"connection failed: {error}")
        raise AssertionError("unreachable")

    async def _drop(self, holder: list[aiosmtplib.SMTP | None]) -> None:
        client, holder[0] = holder[0], None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def close(self) -> None:
        """Close idle connections now and in-flight ones when their send is done."""
        self._closed = True
        while self._idle:
            await self._quit(self._idle.pop())

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.quit(), 2)
        with contextlib.suppress(Exception):
            client.close()
