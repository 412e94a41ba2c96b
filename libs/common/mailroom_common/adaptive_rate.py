"""The shared send rate that follows the relay: a token bucket in PostgreSQL (rate_limits,
one row per account, every replica taking from it) whose refill rate is lowered when the
relay throttles and raised back slowly (AIMD: multiplicative decrease, additive increase).

Every replica reads and changes the same row, each change one statement:

- a take raises the rate by `step` for every whole `interval` since it last changed (never
  above the ceiling) if the rate is in use (the bucket is in debt, or a taker had to wait
  within the last interval), then takes its tokens at that rate;
- a throttling reply multiplies the rate by `factor` (never below the floor), empties the
  bucket and holds every taker back for half an interval (the relay's own count has time to
  fall), at most once per `interval`: N replicas seeing the same burst of 421s lower the
  rate once, not N times.

The row's clock is PostgreSQL's (`clock_timestamp()`), the same for every replica; a test
may pass its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg.pool import Pool

from mailroom_common.metrics import RATE_LIMIT_WAIT_SECONDS


@dataclass(frozen=True)
class AimdPolicy:
    """How the rate moves, in messages a second. A ceiling of 0 means no limit at all."""

    ceiling: float
    floor: float
    step: float  # added every `interval_seconds` without a decrease
    factor: float  # the rate is multiplied by it at a decrease
    interval_seconds: float

    @classmethod
    def fixed(cls, rate: float) -> AimdPolicy:
        """A rate that never moves: floor = ceiling."""
        return cls(ceiling=rate, floor=rate, step=0, factor=1, interval_seconds=1)

    @property
    def lowest(self) -> float:
        return min(self.floor, self.ceiling)


@dataclass(frozen=True)
class Taken:
    waited_seconds: float
    rate: float  # the shared rate the tokens were taken at


@dataclass(frozen=True)
class Lowered:
    rate: float  # the shared rate after this report
    lowered: bool  # this report lowered it (else another did within the interval)


ACCOUNT_RATE_NAME = "smtp:global"  # the SMTP account's bucket (one group: the account)


@dataclass(frozen=True)
class RateState:
    rate: float | None  # None: never taken from
    ceiling: float | None
    reason: str | None  # the reply of the last decrease
    seconds_since_decrease: float | None
    throttle_events: int


# $1 name, $2 count, $3 ceiling, $4 floor, $5 step, $6 interval (s), $7 now or NULL.
# b: the stored rate clamped to [floor, ceiling]; u: whether the rate is idle (the bucket
# filled up and no taker had to wait for the last interval: the senders had less to send
# than the rate, nothing tells it could be higher, so it is not raised and its interval
# starts again; tokens given back fill the bucket too, hence the second half) and the whole
# intervals since it last changed; s: the raised rate; k: the tokens left. The bucket
# refills at the rate, up to a quarter-second of it (a relay counting over a sliding second
# then sees no more than the rate after an idle spell).
TAKE = """
INSERT INTO rate_limits AS r (name, tokens, updated_at, rate, rate_changed_at, ceiling)
VALUES ($1, greatest($3::float8 * 0.25, 1) - $2::float8,
        coalesce($7::timestamptz, clock_timestamp()), $3::float8,
        coalesce($7::timestamptz, clock_timestamp()), $3::float8)
ON CONFLICT (name) DO UPDATE SET
    (rate, rate_changed_at, ceiling, tokens, updated_at, waited_at) = (
    SELECT s.rate, s.changed_at, $3::float8, k.tokens,
           greatest(excluded.updated_at, r.updated_at),
           CASE WHEN k.tokens < 0 THEN excluded.updated_at ELSE r.waited_at END
    FROM (SELECT least($3::float8, greatest($4::float8, coalesce(r.rate, $3::float8))) AS base,
                 greatest(extract(epoch FROM excluded.updated_at - r.updated_at), 0) AS elapsed
         ) b,
    LATERAL (SELECT r.tokens + b.elapsed * b.base >= greatest(b.base * 0.25, 1)
                    AND (r.waited_at IS NULL
                         OR r.waited_at < excluded.updated_at - make_interval(secs => $6::float8))
                    AS idle,
                    CASE WHEN r.rate IS NULL OR r.rate_changed_at IS NULL THEN 0
                         ELSE floor(greatest(extract(epoch FROM
                                  excluded.updated_at - r.rate_changed_at), 0) / $6::float8)
                    END AS steps) u,
    LATERAL (SELECT CASE WHEN u.idle THEN b.base
                         ELSE least($3::float8, b.base + $5::float8 * u.steps) END AS rate,
                    CASE WHEN u.idle THEN excluded.updated_at
                         WHEN u.steps > 0
                         THEN r.rate_changed_at + make_interval(secs => u.steps * $6::float8)
                         ELSE r.rate_changed_at END AS changed_at) s,
    LATERAL (SELECT least(greatest(s.rate * 0.25, 1), r.tokens + b.elapsed * s.rate)
                    - $2::float8 AS tokens) k)
RETURNING tokens, rate
"""

# $1 name, $2 ceiling, $3 floor, $4 factor, $5 interval (s), $6 reason, $7 events, $8 now.
_DUE = "(r.decreased_at IS NULL OR r.decreased_at <= n.t - make_interval(secs => $5::float8))"
LOWER = f"""
UPDATE rate_limits AS r SET
    rate = CASE WHEN {_DUE}
                THEN greatest($3::float8, least($2::float8, coalesce(r.rate, $2::float8)) * $4)
                ELSE r.rate END,
    rate_changed_at = CASE WHEN {_DUE} THEN n.t ELSE r.rate_changed_at END,
    tokens = CASE WHEN {_DUE}
                  THEN least(r.tokens, 0) - $5::float8 / 2
                       * greatest($3::float8, least($2::float8, coalesce(r.rate, $2::float8)) * $4)
                  ELSE r.tokens END,
    reason = CASE WHEN {_DUE} THEN $6 ELSE r.reason END,
    decreased_at = CASE WHEN {_DUE} THEN n.t ELSE r.decreased_at END,
    throttle_events = r.throttle_events + $7
FROM (SELECT coalesce($8::timestamptz, clock_timestamp()) AS t) n
WHERE r.name = $1
RETURNING r.rate, r.decreased_at = n.t AS lowered
"""

GIVE_BACK = "UPDATE rate_limits SET tokens = tokens + $2::float8 WHERE name = $1"

STATE = """
SELECT rate, ceiling, reason, throttle_events,
       extract(epoch FROM clock_timestamp() - decreased_at)::float8 AS since_decrease
FROM rate_limits WHERE name = $1
"""


class AdaptiveRateLimiter:
    def __init__(self, pool: Pool, name: str, clock: Callable[[], datetime] | None = None) -> None:
        self.pool = pool
        self.name = name
        self.clock = clock

    def _now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    async def take(self, count: int, policy: AimdPolicy, wait: bool = True) -> Taken:
        """Take `count` tokens at the shared rate, raised first if an interval went by;
        waits out the debt unless told not to (a test's clock)."""
        if policy.ceiling <= 0 or count <= 0:
            return Taken(0.0, policy.ceiling)
        row = await self.pool.fetchrow(
            TAKE,
            self.name,
            float(count),
            policy.ceiling,
            policy.lowest,
            policy.step,
            policy.interval_seconds,
            self._now(),
        )
        assert row is not None
        tokens, rate = float(row["tokens"]), float(row["rate"])
        if tokens >= 0:
            return Taken(0.0, rate)
        debt = -tokens / rate
        if wait:
            RATE_LIMIT_WAIT_SECONDS.inc(debt)
            await asyncio.sleep(debt)
        return Taken(debt, rate)

    async def lower(self, policy: AimdPolicy, reason: str, events: int = 1) -> Lowered | None:
        """The relay throttled (`events` replies, the first `reason`): lower the shared rate
        unless it was lowered within the interval. None before the first take."""
        if policy.ceiling <= 0:
            return None
        row = await self.pool.fetchrow(
            LOWER,
            self.name,
            policy.ceiling,
            policy.lowest,
            policy.factor,
            policy.interval_seconds,
            reason[:500],
            events,
            self._now(),
        )
        if row is None:
            return None
        return Lowered(rate=float(row["rate"]), lowered=bool(row["lowered"]))

    async def give_back(self, count: int) -> None:
        """Tokens taken and not used (a taker too far in the queue takes again later)."""
        await self.pool.execute(GIVE_BACK, self.name, float(count))

    async def state(self) -> RateState:
        row = await self.pool.fetchrow(STATE, self.name)
        if row is None:
            return RateState(None, None, None, None, 0)
        return RateState(
            rate=row["rate"],
            ceiling=row["ceiling"],
            reason=row["reason"],
            seconds_since_decrease=row["since_decrease"],
            throttle_events=int(row["throttle_events"]),
        )

    async def summary(self) -> dict[str, Any] | None:
        """The shared rate for `campaign status`: the rate, its ceiling and why it is
        below (the reply of the last decrease); None before any send."""
        state = await self.state()
        if state.rate is None:
            return None
        lowered = state.ceiling is not None and state.rate < state.ceiling
        return {
            "rate_per_second": round(state.rate, 2),
            "ceiling_per_second": state.ceiling,
            "reason": f"lowered: {state.reason}" if lowered and state.reason else "ceiling",
            "seconds_since_decrease": (
                None
                if state.seconds_since_decrease is None
                else round(state.seconds_since_decrease, 1)
            ),
            "throttle_events": state.throttle_events,
        }
