"""An aiosmtpd server that misbehaves on demand: per-recipient replies, a stalled RCPT or
DATA, a connection reset after the message, refused logins."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.ports import free_port

# a test server on loopback: plain-text AUTH is what it is for
warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")


@dataclass
class FaultyHandler:
    # recipient (lower case) -> the reply to its RCPT
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # recipient -> the reply to DATA of a message to it
    data_replies: dict[str, str] = field(default_factory=dict)
    stall_rcpt: set[str] = field(default_factory=set)
    stall_data: set[str] = field(default_factory=set)
    reset_in_data: set[str] = field(default_factory=set)
    stall_seconds: float = 2.0
    delivered: list[tuple[list[str], bytes]] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    stalled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.commands["MAIL"] += 1
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        lowered = address.lower()
        if lowered in self.stall_rcpt:
            self.stalled.set()
            await asyncio.sleep(self.stall_seconds)
        if lowered in self.rcpt_replies:
            return self.rcpt_replies[lowered]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = [r.lower() for r in envelope.rcpt_tos]
        if any(r in self.stall_data for r in recipients):
            self.stalled.set()
            await asyncio.sleep(self.stall_seconds)
        if any(r in self.reset_in_data for r in recipients):
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # gone before answering: the client cannot know
            return "250 never seen"
        for recipient in recipients:
            if recipient in self.data_replies:
                return self.data_replies[recipient]
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        with self.lock:
            self.delivered.append((recipients, data))
        return "250 2.0.0 Ok: queued"

    def delivered_to(self) -> Counter[str]:
        with self.lock:
            return Counter(r for recipients, _ in self.delivered for r in recipients)


class FaultySmtpServer:
    """With `password`, logins are required and only `username`/`password` is accepted."""

    def __init__(self, username: str = "", password: str = "") -> None:
        self.handler = FaultyHandler()
        self.port = free_port()
        self.username, self.password = username, password
        options: dict[str, Any] = {}
        if password:
            options = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False, **options
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> FaultySmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
