"""What a benchmark run is asked to do (`mailroom bench` options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layout = Literal["single", "separate"]
BARE_SAMPLE_LIMIT = 20_000
BARE_SAMPLE_SECONDS = 20  # with a slow server, the bare loop's sample is this long at best


@dataclass(frozen=True)
class BenchOptions:
    recipients: int = 50_000
    size: int | None = 5_000  # bytes of each message, about; None: the demo newsletter as is
    smtp_latency: float = 0.0  # seconds the SMTP server waits per message
    pool: int = 8  # SMTP connections of the account (each sender process has a pool)
    processes: Layout = "single"
    sender_replicas: int = 1
    bare_messages: int | None = None  # None: min(recipients, 20,000), shorter with latency
    # the account's SMTP server answers 421 4.7.0 above this many messages a second (0: never);
    # the account's messages_per_second is then twice that, for the sender to find the rate
    smtp_throttle_above: int = 0
    keep: bool = False  # keep the database and queues for inspection
    dkim: bool = False  # every message signed (rsa-sha256, a key made for the run)

    def problems(self) -> list[str]:
        found = []
        if self.recipients < 1:
            found.append("--recipients must be at least 1")
        if not 1 <= self.pool <= 200:
            found.append("--pool must be between 1 and 200 (the SMTP account's limit)")
        if self.smtp_latency < 0:
            found.append("--smtp-latency must not be negative")
        if self.sender_replicas < 1:
            found.append("--sender-replicas must be at least 1")
        if self.processes == "single" and self.sender_replicas != 1:
            found.append("--sender-replicas needs --processes separate")
        if self.smtp_throttle_above < 0:
            found.append("--smtp-throttle-above must not be negative")
        if self.size is not None and self.size < 1:
            found.append("--size must be positive")
        return found

    @property
    def bare_connections(self) -> int:
        """The bare loop's connections: as many as all the senders may hold together."""
        return self.pool * self.sender_replicas

    @property
    def account_rate(self) -> float:
        """The account's messages_per_second: no limit, or twice what a throttling relay
        takes (the ceiling the adaptive rate comes down from)."""
        return 2.0 * self.smtp_throttle_above

    def bare_sample(self) -> int:
        """How many messages the bare aiosmtplib loop sends."""
        if self.bare_messages is not None:
            return max(1, min(self.bare_messages, self.recipients))
        sample = min(self.recipients, BARE_SAMPLE_LIMIT)
        if self.smtp_latency > 0:
            ideal = int(self.bare_connections / self.smtp_latency * BARE_SAMPLE_SECONDS)
            sample = min(sample, max(self.bare_connections, ideal))
        return sample
