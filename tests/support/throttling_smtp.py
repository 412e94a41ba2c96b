"""A recording SMTP server (tests/support/smtp.py) that throttles like a relay enforcing a
rate: MAIL is answered "421 4.7.0 Try again later" while it has taken `per_second`
transactions in the last second (mailroom.smtp_sink.RateWindow, as the benchmark's)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailroom.smtp_sink import THROTTLED, RateWindow
from tests.support.smtp import RecordingHandler, SmtpServer


@dataclass
class ThrottlingHandler(RecordingHandler):
    window: RateWindow = field(default_factory=lambda: RateWindow(10))
    refused_at: list[float] = field(default_factory=list)  # monotonic

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            admitted = self.window.admit()
        if not admitted:
            self.refused_at.append(time.monotonic())
            return THROTTLED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    @property
    def deferrals(self) -> int:
        with self.lock:
            return self.window.refused

    def timeline(self) -> str:
        """Accepted/deferred in each second from the first transaction: "50/12 49/0 ..."."""
        with self.lock:
            accepted, refused = [r.at for r in self.received], list(self.refused_at)
        if not accepted:
            return ""
        start = min(accepted + refused)
        taken = Counter(int(t - start) for t in accepted)
        deferred = Counter(int(t - start) for t in refused)
        seconds = range(max(taken | deferred) + 1)
        return " ".join(f"{taken[s]}/{deferred[s]}" for s in seconds)


class ThrottlingSmtpServer(SmtpServer):
    handler: ThrottlingHandler

    def __init__(self, per_second: int) -> None:
        super().__init__()
        self.handler = ThrottlingHandler(window=RateWindow(per_second))
        self.controller.handler = self.handler

    def __enter__(self) -> ThrottlingSmtpServer:
        super().__enter__()
        return self
