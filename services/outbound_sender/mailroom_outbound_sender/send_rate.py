"""The SMTP account's send rate as the sender uses it: tokens taken before each chunk, the
rate lowered when the relay throttles (adaptive_rate, shared by every replica), and the
metrics of both.

One group today: the whole account ("account"). Per-recipient-domain groups would be more
rows of the same table.
"""

from __future__ import annotations

import asyncio
import logging
import math

from asyncpg.pool import Pool
from mailroom_common.adaptive_rate import AdaptiveRateLimiter, AimdPolicy, Taken
from mailroom_common.metrics import (
    RATE_LIMIT_WAIT_SECONDS,
    SEND_RATE_PER_SECOND,
    THROTTLE_EVENTS,
)
from mailroom_common.runtime_settings import SmtpAccount

from mailroom_outbound_sender.smtp_pool import Outcome

log = logging.getLogger(__name__)

GROUP = "account"
WAKE_SECONDS = 0.05  # a waiting taker looks at the rate this often


def policy_of(account: SmtpAccount) -> AimdPolicy:
    """The account's caps: its messages_per_second is the ceiling (0: no limit at all)."""
    ceiling = account.messages_per_second
    if not account.adaptive_rate:
        return AimdPolicy.fixed(ceiling)
    return AimdPolicy(
        ceiling=ceiling,
        floor=account.rate_floor_per_second,
        step=ceiling * account.rate_increase_step_percent / 100,
        factor=account.rate_decrease_factor,
        interval_seconds=account.rate_interval_seconds,
    )


class SendRate:
    def __init__(self, pool: Pool, name: str) -> None:
        self.limiter = AdaptiveRateLimiter(pool, name)
        self.policy = AimdPolicy.fixed(0)
        self.current = 0.0  # the shared rate as last seen (0: no limit)

    def use(self, account: SmtpAccount) -> None:
        self.policy = policy_of(account)
        self._seen(self.policy.ceiling)

    @property
    def unlimited(self) -> bool:
        """No rate at all (the account's messages_per_second is 0): no token is taken."""
        return self.policy.ceiling <= 0

    def _seen(self, rate: float) -> None:
        self.current = rate
        SEND_RATE_PER_SECOND.labels(GROUP).set(rate)

    async def take(self, count: int) -> None:
        """Take `count` tokens and wait the debt out. A debt is a place in the queue of
        every taker: when the rate comes down meanwhile (this sender lowered it, or saw it
        lowered), the rest of the wait grows with it and by the decrease's hold, so that
        sends queued at the old rate do not go out at the old rate after the relay said it
        was too fast. A wait longer than an interval (the rate may move meanwhile, up as
        well) gives its tokens back and takes again after that long."""
        waited = 0.0
        taken = await self._take(count)
        remaining, rate = taken.waited_seconds, taken.rate
        while remaining > 0:
            longest = self._longest_wait()
            if remaining > longest:
                await self.limiter.give_back(count)
                await asyncio.sleep(longest)
                waited += longest
                taken = await self._take(count)
                remaining, rate = taken.waited_seconds, taken.rate
                continue
            nap = min(remaining, WAKE_SECONDS)
            await asyncio.sleep(nap)
            waited += nap
            remaining -= nap
            if 0 < self.current < rate:
                # as a taker would now: its place in the queue at the new rate, after the
                # hold of a decrease (adaptive_rate.LOWER)
                remaining = remaining * rate / self.current + self.policy.interval_seconds / 2
                rate = self.current
        RATE_LIMIT_WAIT_SECONDS.inc(waited)

    async def _take(self, count: int) -> Taken:
        taken = await self.limiter.take(count, self.policy, wait=False)
        self._seen(taken.rate)
        return taken

    def _longest_wait(self) -> float:
        """A fixed rate never moves: its takers wait their turn however long it is."""
        policy = self.policy
        return policy.interval_seconds if policy.floor < policy.ceiling else math.inf

    async def after(self, outcomes: list[Outcome]) -> None:
        """Lower the shared rate if the relay throttled any of these sends."""
        throttled = [o for o in outcomes if o.throttled]
        if not throttled:
            return
        THROTTLE_EVENTS.labels(GROUP).inc(len(throttled))
        reason = throttled[0].smtp_reply
        lowered = await self.limiter.lower(self.policy, reason, len(throttled))
        if lowered is None:
            return
        self._seen(lowered.rate)
        if lowered.lowered:
            log.info("the relay throttles (%s): send rate lowered to %.1f/s", reason, lowered.rate)
