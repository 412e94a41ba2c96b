"""How every consumer takes a message: parse, process, acknowledge; never lose, never loop.

- Not JSON, wrong schema, unknown routing key, or `Rejected` from the handler: the message
  goes to its queue's dead-letter queue with the reason in `x-mailroom-error`, and the
  consumer carries on.
- Any other error (database down, broker hiccup): the message is requeued after a pause;
  once it has been delivered `delivery_limit` times the handler's `give_up` runs (e.g. fail
  the items it carried, so no campaign waits for ever) and it is dead-lettered with the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from faststream.rabbit import RabbitQueue
from faststream.rabbit.message import RabbitMessage
from pydantic import ValidationError

from mailroom_common.events import Event
from mailroom_common.metrics import MESSAGES_HANDLED
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

ERROR_HEADER = "x-mailroom-error"
REQUEUE_PAUSE_SECONDS = 1.0


class Rejected(Exception):
    """The message can never be processed (e.g. it names an unknown campaign)."""


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for issue in error.errors()[:5]:
        where = ".".join(str(p) for p in issue["loc"]) or "message"
        problems.append(f"{where}: {issue['msg']}")
    return "; ".join(problems)


async def dead_letter(
    runtime: Runtime, queue: RabbitQueue, message: RabbitMessage, reason: str
) -> None:
    headers: dict[str, Any] = dict(message.headers or {})
    headers[ERROR_HEADER] = reason[:1000]
    headers["x-mailroom-queue"] = queue.name
    raw = message.raw_message
    await runtime.broker.publish(
        message.body,
        exchange=runtime.topology.dead_letters,
        routing_key=queue.name,
        persist=True,
        headers=headers,
        content_type=raw.content_type,
        message_type=raw.type,
    )
    log.warning("dead-lettered a message from %s: %s", queue.name, reason)


def delivery_count(message: RabbitMessage) -> int:
    """How many times this message was delivered before (quorum queues count it)."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    return int(count) if isinstance(count, int | str) and str(count).isdigit() else 0


async def take(
    runtime: Runtime,
    queue: RabbitQueue,
    message: RabbitMessage,
    models: Mapping[str, type[E]] | type[E],
    process: Callable[[E, RabbitMessage], Awaitable[None]],
    give_up: Callable[[E, str], Awaitable[None]] | None = None,
) -> None:
    """Handle one message from `queue` with `process`; the message is acked or requeued here."""
    try:
        outcome = await _handle(runtime, queue, message, models, process, give_up)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        # dead-lettering or giving up failed (broker or database down): try again later,
        # the delivery limit of the queue stays the last resort
        log.warning("could not settle a message from %s: %r", queue.name, error)
        await _requeue(message)
        outcome = "requeued"
    MESSAGES_HANDLED.labels(queue.name, outcome).inc()


async def _requeue(message: RabbitMessage) -> None:
    await asyncio.sleep(REQUEUE_PAUSE_SECONDS)
    await message.reject(requeue=True)


async def _handle(
    runtime: Runtime,
    queue: RabbitQueue,
    message: RabbitMessage,
    models: Mapping[str, type[E]] | type[E],
    process: Callable[[E, RabbitMessage], Awaitable[None]],
    give_up: Callable[[E, str], Awaitable[None]] | None,
) -> str:
    try:
        event = _parse(message, models)
    except Rejected as error:
        await dead_letter(runtime, queue, message, str(error))
        await message.ack()
        return "dead_lettered"
    try:
        await process(event, message)
    except Rejected as error:
        await dead_letter(runtime, queue, message, str(error))
        await message.ack()
        return "dead_lettered"
    except asyncio.CancelledError:
        raise
    except Exception as error:
        deliveries = delivery_count(message) + 1
        if deliveries < runtime.settings.delivery_limit:
            log.warning(
                "requeueing a message from %s (delivery %d): %r", queue.name, deliveries, error
            )
            await _requeue(message)
            return "requeued"
        reason = f"failed {deliveries} times, last error: {error!r}"
        log.exception("giving up on a message from %s", queue.name)
        if give_up is not None:
            await give_up(event, reason)
        await dead_letter(runtime, queue, message, reason)
        await message.ack()
        return "dead_lettered"
    await message.ack()
    return "ok"


def _parse(message: RabbitMessage, models: Mapping[str, type[E]] | type[E]) -> E:
    if isinstance(models, Mapping):
        routing_key = message.raw_message.routing_key or ""
        if routing_key not in models:
            raise Rejected(f"unknown message type {routing_key!r}")
        model = models[routing_key]
    else:
        model = models
    try:
        return model.model_validate_json(message.body)
    except ValidationError as error:
        raise Rejected(
            f"invalid {model.routing_key} message: {describe_validation_error(error)}"
        ) from error
