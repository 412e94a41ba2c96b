"""A token bucket in PostgreSQL, shared by every replica (e.g. the SMTP messages per second).

Taking tokens may leave the bucket in debt; the taker then waits the debt out, so over any
period the replicas together take at most `rate * seconds + burst` tokens.
"""

from __future__ import annotations

import asyncio

from asyncpg.pool import Pool

from mailroom_common.metrics import RATE_LIMIT_WAIT_SECONDS

TAKE = """
INSERT INTO rate_limits AS r (name, tokens, updated_at)
VALUES ($1, $3::float8 - $2::float8, clock_timestamp())
ON CONFLICT (name) DO UPDATE SET
    tokens = least($3::float8,
                   r.tokens + extract(epoch FROM clock_timestamp() - r.updated_at) * $4::float8)
             - $2::float8,
    updated_at = clock_timestamp()
RETURNING tokens
"""


class SharedRateLimiter:
    def __init__(self, pool: Pool, name: str) -> None:
        self.pool = pool
        self.name = name

    async def take(self, count: int, per_second: float) -> float:
        """Take `count` tokens at `per_second` (0: unlimited); returns the seconds waited."""
        if per_second <= 0 or count <= 0:
            return 0.0
        burst = max(per_second, 1.0)
        tokens: float = await self.pool.fetchval(TAKE, self.name, float(count), burst, per_second)
        if tokens >= 0:
            return 0.0
        wait = -tokens / per_second
        RATE_LIMIT_WAIT_SECONDS.inc(wait)
        await asyncio.sleep(wait)
        return wait
