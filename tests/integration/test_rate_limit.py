"""The shared send rate holds across several takers (as across replicas)."""

from __future__ import annotations

import asyncio
import time

import pytest
from mailroom_common.adaptive_rate import AdaptiveRateLimiter, AimdPolicy

from tests.support.environment import Installation

pytestmark = pytest.mark.integration


async def test_takers_together_stay_under_the_rate(installation: Installation) -> None:
    assert installation.pool is not None
    takers = [AdaptiveRateLimiter(installation.pool, "test:rate") for _ in range(4)]
    rate = 200.0
    taken = 0
    started = time.monotonic()

    async def take(limiter: AdaptiveRateLimiter) -> None:
        nonlocal taken
        for _ in range(25):
            await limiter.take(10, AimdPolicy.fixed(rate))
            taken += 10

    await asyncio.gather(*(take(t) for t in takers))
    elapsed = time.monotonic() - started
    # 1,000 tokens at 200/s with a burst of at most 200: at least (1000 - 200) / 200 = 4 s
    print(f"\n{taken} tokens in {elapsed:.2f} s ({taken / elapsed:.0f}/s, limit {rate:.0f}/s)")
    assert taken == 1000
    assert elapsed >= (taken - rate) / rate * 0.95


async def test_zero_means_unlimited(installation: Installation) -> None:
    assert installation.pool is not None
    limiter = AdaptiveRateLimiter(installation.pool, "test:unlimited")
    assert (await limiter.take(10_000, AimdPolicy.fixed(0))).waited_seconds == 0.0
