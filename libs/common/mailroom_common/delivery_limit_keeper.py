"""The delivery-limit policy at a process's start, as a best effort that never stops it.

The policy is the broker's last resort behind `intake`'s own count of deliveries, and the
management API that sets it is a plugin that can be down (or slow) while AMQP works: the
first attempt gets a few seconds; when it fails the process logs one warning (the setting
and the reason) and starts all the same, and a background task tries again with back-off
until the policy is put. The gauge mailroom_delivery_limit_policy_applied says where it is
(the alert MailroomDeliveryLimitPolicyMissing). `mailroom migrate` is where a wrong setting
fails loudly (`put_before`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from mailroom_common.broker import Topology
from mailroom_common.broker_policy import (
    BrokerPolicyError,
    apply_delivery_limit,
    delivery_limit_policy_name,
)
from mailroom_common.metrics import DELIVERY_LIMIT_POLICY_APPLIED
from mailroom_common.settings import Settings

log = logging.getLogger(__name__)

ATTEMPT_SECONDS = 5.0
FIRST_RETRY_SECONDS = 5.0
LONGEST_RETRY_SECONDS = 300.0

# puts the policy, giving up after the seconds it is given; raises BrokerPolicyError
Put = Callable[[float], Awaitable[None]]


def back_off(first: float, longest: float) -> Iterator[float]:
    """first, twice that, ... up to `longest`, then `longest` for ever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, longest)


def _put_of(settings: Settings, topology: Topology) -> Put:
    async def put(seconds: float) -> None:
        await apply_delivery_limit(settings, topology, within=seconds)

    return put


class DeliveryLimitKeeper:
    """`start()` makes one bounded attempt; `stop()` ends the retries still going on."""

    def __init__(
        self,
        put: Put,
        name: str,
        attempt_seconds: float = ATTEMPT_SECONDS,
        delays: Iterator[float] | None = None,
    ) -> None:
        self._put = put
        self.name = name
        self.attempt_seconds = attempt_seconds
        self._delays = delays or back_off(FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS)
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, settings: Settings, topology: Topology) -> DeliveryLimitKeeper:
        return cls(_put_of(settings, topology), delivery_limit_policy_name(topology))

    async def start(self) -> None:
        DELIVERY_LIMIT_POLICY_APPLIED.set(0)
        try:
            await self._put(self.attempt_seconds)
        except BrokerPolicyError as error:
            log.warning(
                "cannot put the delivery-limit policy %s: %s. Starting without it (intake"
                " still counts deliveries) and trying again in the background;"
                " mailroom_delivery_limit_policy_applied is 0 until then.",
                self.name,
                error,
            )
        except Exception:  # a bug of ours: the start goes on all the same
            log.exception("cannot put the delivery-limit policy %s", self.name)
        else:
            DELIVERY_LIMIT_POLICY_APPLIED.set(1)
            return
        self.task = asyncio.create_task(self._retry(), name="delivery-limit-policy")

    async def _retry(self) -> None:
        attempts = 1
        for delay in self._delays:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._put(self.attempt_seconds)
            except BrokerPolicyError as error:
                log.debug("delivery-limit policy %s, attempt %d: %s", self.name, attempts, error)
                continue
            except Exception:  # a bug of ours must not end the retries unseen
                log.exception("delivery-limit policy %s, attempt %d", self.name, attempts)
                continue
            DELIVERY_LIMIT_POLICY_APPLIED.set(1)
            log.info("put the delivery-limit policy %s (attempt %d)", self.name, attempts)
            return

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def put_before(
    put: Put, within: float, attempt_seconds: float = ATTEMPT_SECONDS, first_retry: float = 1.0
) -> None:
    """Put the policy, trying again for `within` seconds while the API cannot be reached or
    fails (5xx); a refusal that will not change (401, 403, 404) is raised at once, and so is
    the last error when the time is up."""
    deadline = time.monotonic() + within
    for delay in back_off(first_retry, LONGEST_RETRY_SECONDS):
        left = deadline - time.monotonic()
        try:
            await put(max(min(attempt_seconds, left), 0.1))
        except BrokerPolicyError as error:
            if error.lasting or time.monotonic() + delay >= deadline:
                raise
            await asyncio.sleep(delay)
            continue
        return


async def put_for_migrate(settings: Settings, topology: Topology) -> None:
    """`mailroom migrate`'s step: waits up to MAILROOM_BROKER_WAIT_SECONDS, then raises."""
    await put_before(_put_of(settings, topology), settings.broker_wait_seconds)
