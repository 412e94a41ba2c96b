"""The adaptive send rate's arithmetic (AIMD), in the shared row, on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mailroom_common.adaptive_rate import AdaptiveRateLimiter, AimdPolicy

from tests.support.environment import Installation

pytestmark = pytest.mark.integration

POLICY = AimdPolicy(ceiling=100, floor=5, step=10, factor=0.5, interval_seconds=2)
BUSY = 10_000  # tokens taken at once: the bucket stays in debt, the rate in use


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def limiters(installation: Installation, clock: Clock, n: int) -> list[AdaptiveRateLimiter]:
    assert installation.pool is not None
    return [AdaptiveRateLimiter(installation.pool, "test:aimd", clock) for _ in range(n)]


async def test_decrease_is_multiplicative_and_increase_additive(
    installation: Installation,
) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    assert (await limiter.take(1, POLICY, wait=False)).rate == 100

    lowered = await limiter.lower(POLICY, "421 4.7.0 Try again later")
    assert lowered is not None and lowered.lowered and lowered.rate == 50
    clock.advance(2.5)
    assert (await limiter.lower(POLICY, "421 4.7.0 Try again later")).rate == 25  # type: ignore[union-attr]

    # no step before a whole interval without a decrease, then one step per interval
    await limiter.take(BUSY, POLICY, wait=False)
    clock.advance(1.9)
    assert (await limiter.take(BUSY, POLICY, wait=False)).rate == 25
    clock.advance(0.2)
    assert (await limiter.take(BUSY, POLICY, wait=False)).rate == 35
    clock.advance(4.0)
    assert (await limiter.take(BUSY, POLICY, wait=False)).rate == 55
    # never above the ceiling
    clock.advance(60)
    assert (await limiter.take(BUSY, POLICY, wait=False)).rate == 100

    state = await limiter.state()
    assert state.reason == "421 4.7.0 Try again later" and state.throttle_events == 2


async def test_a_rate_not_in_use_is_not_raised(installation: Installation) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    await limiter.take(1, POLICY, wait=False)
    await limiter.lower(POLICY, "421 4.7.0 Try again later")
    # a trickle: the bucket is full at every take, nothing says the relay takes more
    for _ in range(5):
        clock.advance(POLICY.interval_seconds * 2)
        assert (await limiter.take(1, POLICY, wait=False)).rate == 50
    # in use again: one interval later, one step
    await limiter.take(BUSY, POLICY, wait=False)
    clock.advance(POLICY.interval_seconds)
    assert (await limiter.take(BUSY, POLICY, wait=False)).rate == 60


async def test_never_below_the_floor(installation: Installation) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    await limiter.take(1, POLICY, wait=False)
    rates = []
    for _ in range(8):
        clock.advance(POLICY.interval_seconds)
        lowered = await limiter.lower(POLICY, "421 slow down")
        assert lowered is not None
        rates.append(lowered.rate)
    assert rates == [50, 25, 12.5, 6.25, 5, 5, 5, 5]


async def test_replicas_seeing_the_same_burst_lower_the_rate_once(
    installation: Installation,
) -> None:
    clock = Clock()
    first, second = limiters(installation, clock, 2)
    await first.take(10, POLICY, wait=False)
    await second.take(10, POLICY, wait=False)

    one = await first.lower(POLICY, "421 4.7.0 Try again later", events=3)
    clock.advance(0.5)
    other = await second.lower(POLICY, "421 4.7.0 Try again later", events=4)
    assert one is not None and one.lowered and one.rate == 50
    assert other is not None and not other.lowered and other.rate == 50
    assert (await second.state()).throttle_events == 7

    clock.advance(POLICY.interval_seconds)
    again = await second.lower(POLICY, "421 4.7.0 Try again later")
    assert again is not None and again.lowered and again.rate == 25


async def test_a_decrease_empties_the_bucket_and_the_debt_follows_the_rate(
    installation: Installation,
) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    # a full bucket: a quarter-second of the ceiling (25 tokens)
    assert (await limiter.take(10, POLICY, wait=False)).waited_seconds == 0
    await limiter.lower(POLICY, "421 4.7.0 Try again later")
    # the 15 tokens left are gone, and takers are held back half an interval at the new
    # rate (50 tokens): 10 more at 50/s are a debt of (50 + 10) / 50 = 1.2 s
    taken = await limiter.take(10, POLICY, wait=False)
    assert taken.rate == 50 and taken.waited_seconds == pytest.approx(1.2)


async def test_a_fixed_policy_never_moves(installation: Installation) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    await limiter.take(1, POLICY, wait=False)
    await limiter.lower(POLICY, "421 4.7.0 Try again later")
    assert (await limiter.take(1, AimdPolicy.fixed(100), wait=False)).rate == 100


async def test_tokens_given_back_are_there_for_the_next_taker(
    installation: Installation,
) -> None:
    clock = Clock()
    (limiter,) = limiters(installation, clock, 1)
    await limiter.take(25, POLICY, wait=False)  # the whole quarter-second bucket
    far = await limiter.take(100, POLICY, wait=False)
    assert far.waited_seconds == pytest.approx(1.0)
    await limiter.give_back(100)
    assert (await limiter.take(10, POLICY, wait=False)).waited_seconds == pytest.approx(0.1)
