"""The circuit breaker: a running campaign pauses itself when its hard-bounce or complaint
rate passes a setting, or when the SMTP account has refused all its sends for a while.

The rates come from counts kept on the campaign row as results and bounces are recorded
(the sender's recording, and a trigger on bounces: migration 0011), so a check reads one row
per running campaign whatever its size. They are judged on what happened since the launch or
the last resume, once at least MAILROOM_BREAKER_MIN_ATTEMPTS attempts were made in that time:
a campaign a person resumed does not trip again on the figures it was paused for, only on
new attempts that pass the rate again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from asyncpg import Record
from mailroom_common import campaign_lifecycle
from mailroom_common.logs import log_context
from mailroom_common.runtime import Runtime
from mailroom_common.settings import Settings
from prometheus_client import Counter

log = logging.getLogger(__name__)

BREAKER_TRIPS = Counter(
    "mailroom_campaign_breaker_trips_total",
    "Campaigns paused by the circuit breaker, by cause: hard_bounces, complaints, account.",
    ["cause"],
)

# $1: campaign_lifecycle.SENDING_STATUSES (through the campaigns_active partial index);
# $2: the campaign, or null for all of them.
RUNNING_FIGURES = """
SELECT id,
       delivery_attempts - resumed_attempts AS attempts,
       hard_bounces - resumed_hard_bounces AS hard_bounces,
       complaints - resumed_complaints AS complaints,
       extract(epoch FROM now() - account_failing_since)::float8 AS account_failing_seconds
FROM campaigns
WHERE status = ANY($1::text[]) AND ($2::bigint IS NULL OR id = $2)
"""


@dataclass(frozen=True)
class Figures:
    """A running campaign's counts since its launch or last resume."""

    attempts: int
    hard_bounces: int
    complaints: int
    # seconds the SMTP account has refused every send (None: it has not)
    account_failing_seconds: float | None = None

    @classmethod
    def of(cls, row: Record) -> Figures:
        return cls(
            row["attempts"], row["hard_bounces"], row["complaints"], row["account_failing_seconds"]
        )


@dataclass(frozen=True)
class Trip:
    cause: str
    reason: str


def judge(figures: Figures, settings: Settings) -> Trip | None:
    """Why this campaign must stop now, if it must."""
    failing = figures.account_failing_seconds
    if failing is not None and failing >= settings.breaker_account_failure_seconds:
        return Trip(
            "account",
            f"circuit breaker: the SMTP account has refused every send for {failing:.0f} s"
            " (authentication or TLS); fix the account, then resume",
        )
    attempts = figures.attempts
    if attempts < settings.breaker_min_attempts:
        return None
    for cause, name, count, limit in (
        ("hard_bounces", "hard-bounce", figures.hard_bounces, settings.breaker_hard_bounce_percent),
        ("complaints", "complaint", figures.complaints, settings.breaker_complaint_percent),
    ):
        rate = 100 * count / attempts
        if rate > limit:
            return Trip(
                cause,
                f"circuit breaker: {name} rate {rate:.2f} % ({count} of {attempts} attempts"
                f" since launch or resume) passed {limit:g} %",
            )
    return None


class CircuitBreaker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def check(self, campaign_id: int | None = None) -> None:
        """Pause the running campaigns (or this one) that passed a limit."""
        settings = self.runtime.settings
        rows = await self.runtime.pool.fetch(
            RUNNING_FIGURES,
            list(campaign_lifecycle.SENDING_STATUSES),
            campaign_id,
        )
        for row in rows:
            trip = judge(Figures.of(row), settings)
            if trip is None:
                continue
            with log_context(campaign_id=row["id"]):
                if await campaign_lifecycle.pause(self.runtime, row["id"], trip.reason):
                    BREAKER_TRIPS.labels(trip.cause).inc()
                    log.warning("campaign %d paused: %s", row["id"], trip.reason)
