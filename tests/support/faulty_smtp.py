"""An SMTP server (aiosmtpd, in a thread) whose faults the test turns on and off while it
keeps recording what it accepted (tests/support/smtp.py's recording, plus when): chosen
replies, stalls and connection resets for chosen recipients, busy (421) for a period,
greylisting (451) and rejecting (550) chosen recipients, resets in the middle of DATA, a slow
server, refused logins, and the whole server gone (stopped, then started again on the same
port).

Faults are driven from the test's thread; the server's thread reads them under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.ports import free_port
from tests.support.smtp import MAILBOX_UNAVAILABLE, TEMPORARY_FAILURE, RecordingHandler

SERVICE_NOT_AVAILABLE = "421 4.3.2 Service not available, closing transmission channel"


@dataclass
class Faults:
    """What the server does wrong right now; every field may change while it runs.
    Recipients are given in lower case."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)  # recipient -> RCPT reply
    data_replies: dict[str, str] = field(default_factory=dict)  # recipient -> DATA reply
    stall_rcpt: set[str] = field(default_factory=set)  # RCPT of these waits stall_seconds
    stall_data: set[str] = field(default_factory=set)  # so does DATA of a message to these
    stall_seconds: float = 2.0
    reset_in_data_for: set[str] = field(default_factory=set)  # every message to these
    busy_until: float = 0.0  # 421 at connect and to every MAIL until then (monotonic)
    greylist: dict[str, int] = field(default_factory=dict)  # recipient -> 451s still to give
    reject: set[str] = field(default_factory=set)  # recipients always answered 550
    reset_in_data: int = 0  # the next N transactions: reset while the message comes in
    reset_after_data: int = 0  # the next N: take the message, then reset instead of 250
    data_delay: float = 0.0  # seconds to wait before taking a message (a slow server)


@dataclass
class FaultCounts:
    """What the server did wrong, for the figures a test prints."""

    busy_replies: int = 0
    greylisted: int = 0
    rejected: int = 0
    reset_in_data: int = 0
    reset_after_data: int = 0  # these messages were recorded: ambiguous for the client


@dataclass
class FaultyHandler(RecordingHandler):
    faults: Faults = field(default_factory=Faults)
    counts: FaultCounts = field(default_factory=FaultCounts)
    commands: Counter[str] = field(default_factory=Counter)  # MAIL commands seen
    stalled: threading.Event = field(default_factory=threading.Event)  # set at a stall

    def busy(self) -> bool:
        return time.monotonic() < self.faults.busy_until

    async def _stall(self) -> None:
        self.stalled.set()
        await asyncio.sleep(self.faults.stall_seconds)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.commands["MAIL"] += 1
        if self.busy():
            with self.lock:
                self.counts.busy_replies += 1
            _close_soon(server)
            return SERVICE_NOT_AVAILABLE
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        lowered = address.lower()
        faults = self.faults
        if lowered in faults.stall_rcpt:
            await self._stall()
        with self.lock:
            if lowered in faults.rcpt_replies:
                return faults.rcpt_replies[lowered]
            if lowered in faults.reject:
                self.counts.rejected += 1
                return MAILBOX_UNAVAILABLE
            if faults.greylist.get(lowered, 0) > 0:
                faults.greylist[lowered] -= 1
                self.counts.greylisted += 1
                return TEMPORARY_FAILURE
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        faults = self.faults
        recipients = [r.lower() for r in envelope.rcpt_tos]
        if faults.data_delay > 0:
            await asyncio.sleep(faults.data_delay)
        if faults.stall_data.intersection(recipients):
            await self._stall()
        refusal = next((faults.data_replies[r] for r in recipients if r in faults.data_replies), "")
        with self.lock:
            if faults.reset_in_data_for.intersection(recipients):
                return self._reset_in_data(server)
            if faults.reset_in_data > 0:
                faults.reset_in_data -= 1
                return self._reset_in_data(server)
            if refusal:
                return refusal
            reset_after = faults.reset_after_data > 0
            if reset_after:
                faults.reset_after_data -= 1
                self.counts.reset_after_data += 1
        accepted = await super().handle_DATA(server, session, envelope)
        if reset_after:
            _reset(server)
            return "250 never seen: the connection is gone"
        return accepted

    def _reset_in_data(self, server: SMTP) -> str:
        self.counts.reset_in_data += 1
        _reset(server)
        return "451 never seen: the connection is gone"

    # --- what arrived, besides RecordingHandler's received, recipients() and message_ids()

    def count(self) -> int:
        """Messages accepted, counted once per recipient."""
        with self.lock:
            return sum(len(r.recipients) for r in self.received)

    def first_after(self, moment: float) -> float | None:
        """When the first message after `moment` (monotonic) was accepted, if any."""
        with self.lock:
            return next((r.at for r in self.received if r.at > moment), None)


def _close_soon(server: SMTP) -> None:
    """Close after the reply now being written has gone out."""
    transport = server.transport
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.close)


def _reset(server: SMTP) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0), no reply."""
    transport = server.transport
    if not isinstance(transport, asyncio.Transport):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _BusyAwareSMTP(SMTP):
    """Greets with 421 (and hangs up) while the handler is busy; keeps a list of live
    sessions so a stop can cut them."""

    def __init__(self, handler: FaultyHandler, sessions: set[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._faulty = handler
        self._sessions = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._faulty.busy():
            with self._faulty.lock:
                self._faulty.counts.busy_replies += 1
            await self.push(SERVICE_NOT_AVAILABLE)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


class _Controller(Controller):
    def __init__(self, handler: FaultyHandler, port: int, **smtp_options: Any) -> None:
        super().__init__(
            handler,
            hostname="127.0.0.1",
            port=port,
            data_size_limit=50 * 1024 * 1024,
            decode_data=False,
            **smtp_options,
        )
        self.sessions: set[SMTP] = set()

    def factory(self) -> SMTP:
        return _BusyAwareSMTP(self.handler, self.sessions, **self.SMTP_kwargs)

    def cut_sessions(self) -> None:
        """Reset every open connection (from the server's own thread)."""
        done = threading.Event()

        def cut() -> None:
            for session in list(self.sessions):
                _reset(session)
            done.set()

        self.loop.call_soon_threadsafe(cut)
        done.wait(5)


class FaultySmtpServer:
    """`with FaultySmtpServer() as smtp:` a recording SMTP server on a free loopback port;
    `smtp.faults` is what it does wrong now, `smtp.gone()` takes it away for a while.
    With `password`, logins are required and only `username`/`password` is accepted."""

    def __init__(self, username: str = "", password: str = "") -> None:
        self.handler = FaultyHandler()
        self.port = free_port()
        self.username, self.password = username, password
        self._smtp_options: dict[str, Any] = {}
        if password:
            self._smtp_options = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        self._controller: _Controller | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        assert self._controller is None, "already running"
        deadline = time.monotonic() + 30
        while True:  # the old listener's port may take a moment to be free again
            controller = _Controller(self.handler, self.port, **self._smtp_options)
            try:
                controller.start()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and reset every open connection: the server is gone."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.cut_sessions()
            controller.stop()

    @contextlib.contextmanager
    def gone(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def busy_for(self, seconds: float) -> float:
        """421 for every new connection and every MAIL from now for `seconds`; the
        connections open now are closed on their next command. Returns when it ends."""
        until = time.monotonic() + seconds
        self.faults.busy_until = until
        return until

    def __enter__(self) -> FaultySmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
