"""The ceiling: a bare aiosmtplib loop, `pool` connections sending rendered messages one
after another to the same server, as the sender's pool does, with nothing else around it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib
from mailroom_common.events import OutboundEmail


@dataclass(frozen=True)
class BareFigures:
    messages: int
    sent: int
    seconds: float

    @property
    def messages_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


async def send_bare(
    host: str,
    port: int,
    messages: Sequence[OutboundEmail],
    recipients: Sequence[str],
    pool: int,
    smtp_timeout: float = 60,
) -> BareFigures:
    """Send one message to each recipient (messages taken in turn), over `pool` connections."""
    bodies = [(m.envelope_from, m.message.encode("ascii")) for m in messages]
    waiting = deque(enumerate(recipients))
    sent = 0

    async def connection() -> None:
        nonlocal sent
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=smtp_timeout)
        await client.connect()
        try:
            while waiting:
                number, recipient = waiting.popleft()
                sender, body = bodies[number % len(bodies)]
                await client.sendmail(sender, [recipient], body)
                sent += 1
        finally:
            await client.quit()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(pool, len(recipients))):
            group.create_task(connection())
    return BareFigures(len(recipients), sent, time.perf_counter() - started)
