"""How a consumer settles messages, on the real broker: dead letters with reasons, give-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream import AckPolicy
from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.broker import declare_topology, make_broker
from mailroom_common.events import ItemsPage
from mailroom_common.intake import Rejected, take
from mailroom_common.runtime import Runtime

from tests.support.environment import RABBITMQ_URL, Installation, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(installation: Installation) -> AsyncIterator[Runtime]:
    assert installation.pool is not None
    settings = installation.settings.model_copy(update={"delivery_limit": 3})
    broker = make_broker(settings)
    yield Runtime.build(settings, installation.pool, broker)
    await broker.stop()


async def _dead_letters(queue_name: str, expected: int) -> list[AbstractIncomingMessage]:
    connection = await aio_pika.connect(RABBITMQ_URL)
    found: list[AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(f"{queue_name}.dlq")

        async def collect() -> bool:
            message = await dlq.get(fail=False)
            if message is not None:
                await message.ack()
                found.append(message)
            return len(found) >= expected

        await wait_for(collect, 30, f"{expected} dead letters", interval=0.05)
    return found


async def test_a_failing_handler_is_retried_then_given_up_and_dead_lettered(
    runtime: Runtime,
) -> None:
    queue = runtime.topology.item_pages
    attempts: list[int] = []
    given_up: list[str] = []

    async def always_fails(page: ItemsPage, _: RabbitMessage) -> None:
        attempts.append(page.page_id)
        raise RuntimeError("database unreachable")

    async def give_up(page: ItemsPage, reason: str) -> None:
        given_up.append(reason)

    async def refuses(page: ItemsPage, _: RabbitMessage) -> None:
        raise Rejected(f"page {page.page_id} names nothing we know")

    handlers = {1: always_fails, 2: refuses}

    async def process(page: ItemsPage, message: RabbitMessage) -> None:
        await handlers[page.page_id](page, message)

    router = RabbitRouter()

    @router.subscriber(queue, runtime.topology.work, ack_policy=AckPolicy.MANUAL)
    async def on_page(message: RabbitMessage) -> None:
        await take(runtime, queue, message, ItemsPage, process, give_up)

    runtime.broker.include_router(router)
    await runtime.broker.connect()
    await declare_topology(runtime.broker, runtime.topology)
    await runtime.broker.start()
    await runtime.send_work(ItemsPage(campaign_id=1, page_id=1, item_ids=[1]))
    await runtime.send_work(ItemsPage(campaign_id=1, page_id=2, item_ids=[2]))

    letters = await _dead_letters(queue.name, 2)
    assert {m.headers["x-mailroom-queue"] for m in letters} == {queue.name}
    by_reason = sorted(str(m.headers["x-mailroom-error"]) for m in letters)
    assert by_reason[0].startswith("failed 3 times, last error: RuntimeError('database")
    assert by_reason[1] == "page 2 names nothing we know"
    assert attempts == [1, 1, 1], "tried up to the delivery limit, then given up"
    assert len(given_up) == 1 and given_up[0].startswith("failed 3 times")
