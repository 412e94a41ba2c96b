"""How the CLI publishes: one broker connection, each publish confirmed, and every wait on
the broker bounded. A broker that takes the connection but never answers (a wrong port, an
overloaded node) or never confirms (a memory or disk alarm blocks publishers) ends the
command after MAILROOM_BROKER_WAIT_SECONDS with one line naming MAILROOM_RABBITMQ_URL
instead of hanging it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

from mailroom_common.broker import Topology, declare_topology, make_broker, publish_event
from mailroom_common.events import Event
from mailroom_common.settings import Settings

from mailroom.unreachable import BrokerSilent

Publish = Callable[[Event], Awaitable[None]]
T = TypeVar("T")


async def _bounded(waiting: Awaitable[T], seconds: float, what: str) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await waiting
    except TimeoutError as error:
        raise BrokerSilent(f"no answer to {what} within {seconds:g} s") from error


@asynccontextmanager
async def publisher(
    settings: Settings, *, commands: bool = False, declare: bool = True
) -> AsyncIterator[Publish]:
    """Publishes to the commands exchange (a command must reach a queue) or the events
    exchange (an event may have no listener)."""
    topology = Topology.from_settings(settings)
    seconds = settings.broker_wait_seconds  # each wait: connecting, declaring, each confirmation
    broker = make_broker(settings, connect_timeout=seconds)
    try:
        # not under asyncio.timeout: the robust connection takes a cancellation for a
        # lost connection and tries again
        try:
            await broker.connect()
        except TimeoutError as error:
            raise BrokerSilent(f"no answer within {seconds:g} s") from error
        if declare:
            await _bounded(declare_topology(broker, topology), seconds, "declaring the queues")
        exchange = topology.commands if commands else topology.events

        async def publish(event: Event) -> None:
            published = publish_event(broker, exchange, event, mandatory=commands)
            await _bounded(published, seconds, f"publishing {event.routing_key}")

        yield publish
    finally:
        with suppress(TimeoutError):  # closing waits on the broker too
            async with asyncio.timeout(seconds):
                await broker.stop()
