"""An SMTP server (aiosmtpd, in a thread) whose faults the test turns on and off while it
keeps recording what it accepted: busy (421) for a period, greylisting (451) and rejecting
(550) chosen recipients, connections reset in the middle of DATA, and the whole server gone
(stopped, then started again on the same port).

Faults are driven from the test's thread; the server's thread reads them under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.ports import free_port
from tests.support.smtp import MAILBOX_UNAVAILABLE, TEMPORARY_FAILURE, Received

SERVICE_NOT_AVAILABLE = "421 4.3.2 Service not available, closing transmission channel"
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Delivery:
    """One accepted message, one recipient: what the counts are made of."""

    recipient: str
    message_id: str
    at: float  # time.monotonic() when the server answered 250


@dataclass
class Faults:
    """What the server does wrong right now; every field may change while it runs."""

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


class FaultyHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults = Faults()
        self.counts = FaultCounts()
        self.received: list[Received] = []
        self.deliveries: list[Delivery] = []

    def busy(self) -> bool:
        return time.monotonic() < self.faults.busy_until

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
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
        with self.lock:
            faults = self.faults
            if lowered in faults.reject:
                self.counts.rejected += 1
                return MAILBOX_UNAVAILABLE
            if faults.greylist.get(lowered, 0) > 0:
                faults.greylist[lowered] -= 1
                self.counts.greylisted += 1
                return TEMPORARY_FAILURE
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        if self.faults.data_delay > 0:
            await asyncio.sleep(self.faults.data_delay)
        with self.lock:
            if self.faults.reset_in_data > 0:
                self.faults.reset_in_data -= 1
                self.counts.reset_in_data += 1
                _reset(server)
                return "451 never seen: the connection is gone"
            reset_after = self.faults.reset_after_data > 0
            if reset_after:
                self.faults.reset_after_data -= 1
                self.counts.reset_after_data += 1
            self._record(envelope, data)
        if reset_after:
            _reset(server)
            return "250 never seen: the connection is gone"
        return "250 Message accepted for delivery"

    def _record(self, envelope: Envelope, data: bytes) -> None:
        found = MESSAGE_ID.search(data[:8192])
        message_id = found.group(1).decode() if found else ""
        now = time.monotonic()
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), data))
        self.deliveries.extend(Delivery(r.lower(), message_id, now) for r in envelope.rcpt_tos)

    # --- what arrived --------------------------------------------------------------------

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def recipients(self) -> Counter[str]:
        return Counter(d.recipient for d in self.snapshot())

    def message_ids(self) -> Counter[str]:
        return Counter(d.message_id for d in self.snapshot())

    def count(self) -> int:
        with self.lock:
            return len(self.deliveries)

    def first_after(self, moment: float) -> float | None:
        """When the first message after `moment` (monotonic) was accepted, if any."""
        return next((d.at for d in self.snapshot() if d.at > moment), None)


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
    def __init__(self, handler: FaultyHandler, port: int) -> None:
        super().__init__(
            handler,
            hostname="127.0.0.1",
            port=port,
            data_size_limit=50 * 1024 * 1024,
            decode_data=False,
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
    `smtp.faults` is what it does wrong now, `smtp.gone()` takes it away for a while."""

    def __init__(self) -> None:
        self.handler = FaultyHandler()
        self.port = free_port()
        self._controller: _Controller | None = None

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        assert self._controller is None, "already running"
        controller = _Controller(self.handler, self.port)
        deadline = time.monotonic() + 30
        while True:  # the old listener's port may take a moment to be free again
            try:
                controller.start()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                controller = _Controller(self.handler, self.port)
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
