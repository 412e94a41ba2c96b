"""A real SMTP server on loopback (aiosmtpd) that records what it receives and can be told
to answer 451 or 550 for chosen recipients, or any reply of one's choosing at RCPT or DATA."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cached_property
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.ports import free_port

TEMPORARY_FAILURE = "451 4.3.0 Try again later"
MAILBOX_UNAVAILABLE = "550 5.1.1 No such user here"
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)  # when the server took it

    @cached_property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, subtype: str) -> str:
        body = self.message.get_body((subtype,))
        assert body is not None, f"no text/{subtype} part"
        content = body.get_content()
        assert isinstance(content, str)
        return content

    @property
    def message_id(self) -> str:
        """Read from the raw header: parsing thousands of whole messages takes seconds."""
        found = MESSAGE_ID.search(self.data[:8192])
        return found.group(1).decode() if found else ""


@dataclass
class RecordingHandler:
    received: list[Received] = field(default_factory=list)
    hard_fail: set[str] = field(default_factory=set)
    soft_fail: set[str] = field(default_factory=set)
    soft_fail_everything_until: float = 0.0
    soft_fail_first: int = 0  # this many recipients are answered 451 before any is accepted
    # address (lower-cased) -> the reply to its RCPT TO, or to the DATA of its message
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        lowered = address.lower()
        if lowered in self.rcpt_replies:
            return self.rcpt_replies[lowered]
        if lowered in self.hard_fail:
            return MAILBOX_UNAVAILABLE
        if lowered in self.soft_fail or time.monotonic() < self.soft_fail_everything_until:
            return TEMPORARY_FAILURE
        with self.lock:
            if self.soft_fail_first > 0:
                self.soft_fail_first -= 1
                return TEMPORARY_FAILURE
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        for recipient in envelope.rcpt_tos:
            if recipient.lower() in self.data_replies:
                return self.data_replies[recipient.lower()]
        with self.lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), data))
        return "250 Message accepted for delivery"

    def message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(r.message_id for r in self.received)

    def recipients(self) -> Counter[str]:
        with self.lock:
            return Counter(rcpt.lower() for r in self.received for rcpt in r.recipients)


class SmtpServer:
    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            data_size_limit=50 * 1024 * 1024,
            decode_data=False,
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
