"""A bounded pool of SMTP connections to the global account, and one send per email.

Outcomes follow RFC 5321 reply classes: 2yz sent, 4yz (and any connection trouble) a
temporary failure to retry later, 5yz a permanent failure with the reply kept. Two kinds of
5yz are not the recipient's doing and are never permanent for the item:

- our own protocol slips (500/502/503/504, e.g. "503 5.5.1 nested MAIL command"): the
  connection is dropped and the email tried again on a fresh one;
- the account's problems (authentication refused, TLS failing): the item waits, without
  using up its tries, until the account is fixed.

A permanent failure says what it is about by its enhanced status code, judged as a DSN's is
(mailroom_common.smtp_status.rejection_kind): the recipient's address (5.1.1 user unknown: a
hard bounce, the address suppressed), a policy or content refusal (5.7.x), or other.

A connection goes back to the pool only when its last transaction ended cleanly: accepted,
or refused and then reset (RSET answered 250). A send cancelled or failing half-way (task
cancelled, timeout, connection trouble) closes its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from mailroom_common.events import OutboundEmail
from mailroom_common.metrics import SMTP_REJECTIONS, SMTP_REPLIES, SMTP_SEND_SECONDS
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.smtp_client import smtp_client
from mailroom_common.smtp_replies import ReplyScrubber
from mailroom_common.smtp_status import RejectionKind, find_status, rejection_kind

from mailroom_outbound_sender.smtp_transaction import ensure_greeted, send_message
from mailroom_outbound_sender.throttling import is_throttling

log = logging.getLogger(__name__)

SMTP_OK_CLASS = 2
SMTP_TRANSIENT_CLASS = 4
OK = 250
SERVICE_CLOSING = 421
# replies to a command we should not have sent, or sent wrongly: our error, not the recipient's
PROTOCOL_ERRORS = frozenset({500, 502, 503, 504})
# the account is not allowed to send (RFC 4954): 530 authentication required, 534 mechanism
# too weak, 535 credentials invalid, 538 encryption required
ACCOUNT_ERRORS = frozenset({530, 534, 535, 538})

Status = Literal["sent", "retry", "failed"]


@dataclass(frozen=True)
class Outcome:
    item_id: int
    status: Status
    smtp_code: int | None
    smtp_reply: str
    # the account's fault (authentication, TLS): the item waits without using up a try
    account_problem: bool = False
    # a permanent failure: what it is about (the address: a hard bounce)
    rejection: RejectionKind | None = None
    # its RFC 3463 status code, e.g. "5.1.1"
    enhanced_status: str | None = None
    # the relay asks us to send slower (throttling.py): the item waits without using up a try
    throttled: bool = False

    @property
    def bounced(self) -> bool:
        """A permanent failure of the recipient's address: a hard bounce at send time."""
        return self.rejection == "address"


@dataclass(frozen=True)
class _Verdict:
    status: Status
    drop_connection: bool = False
    try_fresh_connection: bool = False
    account_problem: bool = False


def judge_reply(code: int) -> _Verdict:
    if not 200 <= code < 600:  # no reply we could read (-1: too long, garbled)
        return _Verdict("retry", drop_connection=True)
    if code // 100 == SMTP_OK_CLASS:
        return _Verdict("sent")
    if code in ACCOUNT_ERRORS:
        return _Verdict("retry", drop_connection=True, account_problem=True)
    if code in PROTOCOL_ERRORS:
        return _Verdict("retry", drop_connection=True, try_fresh_connection=True)
    if code == SERVICE_CLOSING:
        return _Verdict("retry", drop_connection=True)
    if code // 100 == SMTP_TRANSIENT_CLASS:
        return _Verdict("retry")
    return _Verdict("failed")


def _with_rejection(outcome: Outcome, code: int, message: str) -> Outcome:
    kind = rejection_kind(code, message)
    SMTP_REJECTIONS.labels(kind).inc()
    return dataclasses.replace(outcome, rejection=kind, enhanced_status=find_status(message))


def _observe(outcome: Outcome, started: float) -> None:
    SMTP_SEND_SECONDS.labels(outcome.status).observe(time.perf_counter() - started)
    code = outcome.smtp_code
    SMTP_REPLIES.labels(f"{code // 100}xx" if code and 200 <= code < 600 else "none").inc()


def _is_tls_failure(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SmtpPool:
    def __init__(self, account: SmtpAccount) -> None:
        self.account = account
        self.scrub = ReplyScrubber(account.username, account.password.get_secret_value())
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(account.pool_size)
        self._closed = False

    async def _connect(self) -> aiosmtplib.SMTP:
        account = self.account
        client = smtp_client(account, account.timeout_seconds)
        try:
            await client.connect()
            if account.username:
                await client.login(account.username, account.password.get_secret_value())
            await ensure_greeted(client)
        except BaseException:
            client.close()
            raise
        return client

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[list[aiosmtplib.SMTP | None]]:
        """One of `pool_size` connection slots; the holder may replace or drop the client.
        Whatever the holder leaves in the slot is clean (see `_attempt`)."""
        async with self._slots:
            holder: list[aiosmtplib.SMTP | None] = [self._idle.pop() if self._idle else None]
            try:
                yield holder
            except BaseException:
                self._drop(holder)
                raise
            finally:
                client = holder[0]
                if client is not None and client.is_connected:
                    if self._closed:  # retired while this send was in flight
                        await self._quit(client)
                    else:
                        self._idle.append(client)

    async def send_all(self, emails: list[OutboundEmail]) -> list[Outcome]:
        """Send each email once over up to `pool_size` connections; one outcome per email.
        Once the account is refused (authentication, TLS) the rest wait with the same
        outcome instead of trying again."""
        waiting = deque(emails)
        outcomes: list[Outcome] = []
        refused: list[Outcome] = []

        async def worker() -> None:
            async with self._slot() as holder:
                while waiting and not refused:
                    outcome = await self._send_one(holder, waiting.popleft())
                    outcomes.append(outcome)
                    if outcome.account_problem:
                        refused.append(outcome)

        workers = min(self.account.pool_size, len(emails))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        if refused:
            first = refused[0]
            log.warning("the SMTP account was refused: %s", first.smtp_reply)
            outcomes.extend(
                Outcome(e.item_id, "retry", first.smtp_code, first.smtp_reply, True)
                for e in waiting
            )
        return outcomes

    async def _send_one(
        self, holder: list[aiosmtplib.SMTP | None], email: OutboundEmail
    ) -> Outcome:
        outcome, try_again = await self._attempt(holder, email)
        if try_again:  # a stale idle connection, or one in a state we got wrong
            outcome, _ = await self._attempt(holder, email)
        return outcome

    async def _attempt(
        self, holder: list[aiosmtplib.SMTP | None], email: OutboundEmail
    ) -> tuple[Outcome, bool]:
        """One transaction; the outcome, and whether to try again on a fresh connection.
        On return the holder has a clean connection or none; on cancellation none."""
        reused = holder[0] is not None
        started = time.perf_counter()  # a new connection's set-up counts too
        if holder[0] is None:
            refused = await self._open(holder, email)
            if refused is not None:
                _observe(refused, started)
                return refused, False
        client = holder[0]
        assert client is not None
        outcome, try_again = await self._transaction(holder, client, email, reused)
        _observe(outcome, started)
        return outcome, try_again

    async def _transaction(
        self,
        holder: list[aiosmtplib.SMTP | None],
        client: aiosmtplib.SMTP,
        email: OutboundEmail,
        reused: bool,
    ) -> tuple[Outcome, bool]:
        code: int
        message: str
        try:
            reply = await send_message(
                client, email.envelope_from, email.recipient, email.message.encode("ascii")
            )
            if reply.accepted:
                return Outcome(email.item_id, "sent", OK, self.scrub(reply.message)), False
            code, message = reply.code, reply.message
        except aiosmtplib.SMTPResponseException as error:  # a reply we could not read
            code, message = error.code, error.message
        except aiosmtplib.SMTPServerDisconnected as error:
            self._drop(holder)
            return self._retry(email, f"connection lost: {error}"), reused
        except ValueError as error:  # refused by the client before anything was sent
            return Outcome(email.item_id, "failed", None, self.scrub(str(error))), False
        except Exception as error:
            self._drop(holder)
            return self._retry(email, f"connection failed: {error}"), False
        except BaseException:  # cancelled mid-transaction: the connection is in an unknown state
            self._drop(holder)
            raise
        verdict = judge_reply(code)
        scrubbed = self.scrub(f"{code} {message}".strip())
        throttled = verdict.status == "retry" and is_throttling(code, message)
        outcome = Outcome(
            email.item_id,
            verdict.status,
            code,
            scrubbed,
            verdict.account_problem,
            throttled=throttled,
        )
        if verdict.status == "failed":
            outcome = _with_rejection(outcome, code, message)
        if verdict.drop_connection or not await self._reset(holder):
            self._drop(holder)
        return outcome, verdict.try_fresh_connection and reused

    async def _open(
        self, holder: list[aiosmtplib.SMTP | None], email: OutboundEmail
    ) -> Outcome | None:
        """Connect (and log in) into the holder; the outcome for `email` if that failed.
        A failure to connect is never the recipient's: the item waits."""
        try:
            holder[0] = await self._connect()
            return None
        except aiosmtplib.SMTPResponseException as error:
            reply = self.scrub(f"{error.code} {error.message}".strip())
            if error.code in ACCOUNT_ERRORS or isinstance(
                error, aiosmtplib.SMTPAuthenticationError
            ):
                return Outcome(email.item_id, "retry", error.code, reply, True)
            throttled = is_throttling(error.code, error.message)
            return Outcome(email.item_id, "retry", error.code, reply, throttled=throttled)
        except Exception as error:
            if _is_tls_failure(error) or isinstance(error, aiosmtplib.SMTPNotSupported):
                reply = self.scrub(f"TLS with the SMTP server failed: {error}")
                return Outcome(email.item_id, "retry", None, reply, True)
            return self._retry(email, f"connection failed: {error}")

    def _retry(self, email: OutboundEmail, reply: str) -> Outcome:
        return Outcome(email.item_id, "retry", None, self.scrub(reply))

    async def _reset(self, holder: list[aiosmtplib.SMTP | None]) -> bool:
        """After a refusal: is the connection out of its transaction (RSET answered 250)?"""
        client = holder[0]
        if client is None or not client.is_connected:
            return False
        try:
            response = await client.rset()
        except Exception:
            return False
        except BaseException:
            self._drop(holder)
            raise
        return response.code == OK

    @staticmethod
    def _drop(holder: list[aiosmtplib.SMTP | None]) -> None:
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
