"""How a consumer settles messages, on the real broker: dead letters with reasons, give-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream import AckPolicy
from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common import intake
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.events import ItemsPage
from mailroom_common.intake import Rejected, subscribe, take
from mailroom_common.runtime import Runtime

from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.queues import queue_depth as _ready_count

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


UNDECODABLE: list[tuple[str, bytes]] = [
    ("not JSON", b"not json{"),
    ("invalid UTF-8", b'{"campaign_id": "\xff\xfe"}'),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
    ("empty body", b""),
    ("a bare string", b'"\xc3'),
    ("unclosed object", b'{"campaign_id": 1,'),
    ("NaN", b"NaN"),
    ("object in an object", b'{"a": {"b": ' * 5_000),
    ("one more than the prefetch", b"\x00\x01\x02"),
]


async def _publish_raw(runtime: Runtime, body: bytes, tag: str) -> None:
    await runtime.broker.publish(
        body,
        exchange=runtime.topology.work,
        routing_key="items.page",
        persist=True,
        content_type="application/json",
        headers={"x-test": tag},
    )


async def test_undecodable_messages_are_dead_lettered_and_the_consumer_goes_on(
    installation: Installation,
) -> None:
    """More undecodable messages than the prefetch (8), then a good one: the good one is
    processed, each bad one is in the DLQ with its reason, and a restarted consumer finds
    nothing left unsettled. The subscriber is declared the plain way (no decoder of its
    own): the broker's own decoding must not get in the way."""
    pool = installation.pool
    assert pool is not None
    settings = installation.settings.model_copy(update={"delivery_limit": 3})
    queue = Topology.from_settings(settings).item_pages
    processed: list[int] = []

    async def process(page: ItemsPage, _: RabbitMessage) -> None:
        processed.append(page.page_id)

    async def start_consumer() -> Runtime:
        runtime = Runtime.build(settings, pool, make_broker(settings))
        router = RabbitRouter()

        @router.subscriber(queue, runtime.topology.work, ack_policy=AckPolicy.MANUAL)
        async def on_page(message: RabbitMessage) -> None:
            await take(runtime, queue, message, ItemsPage, process)

        runtime.broker.include_router(router)
        await runtime.broker.connect()
        await declare_topology(runtime.broker, runtime.topology)
        await runtime.broker.start()
        return runtime

    runtime = await start_consumer()
    for tag, body in UNDECODABLE:
        await _publish_raw(runtime, body, tag)
    await runtime.send_work(ItemsPage(campaign_id=1, page_id=7, item_ids=[1]))

    async def good_one_processed() -> bool:
        return processed == [7]

    await wait_for(good_one_processed, 30, "the good page after the bad ones")
    await runtime.broker.stop()
    assert await _ready_count(queue.name) == 0, "nothing left unsettled in the work queue"

    runtime = await start_consumer()  # a restart finds nothing to choke on
    await runtime.send_work(ItemsPage(campaign_id=1, page_id=8, item_ids=[1]))

    async def second_one_processed() -> bool:
        return processed == [7, 8]

    await wait_for(second_one_processed, 30, "a good page after the restart")
    await runtime.broker.stop()

    letters = await _dead_letters(queue.name, len(UNDECODABLE))
    reasons = {str(m.headers["x-test"]): str(m.headers["x-mailroom-error"]) for m in letters}
    assert set(reasons) == {tag for tag, _ in UNDECODABLE}
    assert reasons["not JSON"].startswith("invalid items.page message: not JSON:"), reasons[
        "not JSON"
    ]
    assert "not UTF-8" in reasons["invalid UTF-8"], reasons["invalid UTF-8"]
    assert "nested too deeply" in reasons["deep nesting"], reasons["deep nesting"]
    assert reasons["empty body"] == "invalid items.page message: empty body: expected a JSON object"
    assert {m.body for m in letters} == {body for _, body in UNDECODABLE}, "bodies kept as sent"
    assert await _ready_count(f"{queue.name}.dlq") == 0


async def test_data_the_database_refuses_is_dead_lettered_at_once_not_retried(
    runtime: Runtime,
) -> None:
    """A value PostgreSQL refuses for good (out of range, a NUL) fails the same way every
    time: the message goes to the DLQ on its first delivery, with the reason."""
    queue = runtime.topology.item_pages
    attempts: list[int] = []
    given_up: list[str] = []
    queries = {
        1: ("SELECT $1::int", 2**40),  # a value out of range, refused by the client
        2: ("SELECT $1::text", "a\x00b"),  # a NUL, refused by the server
        3: ("SELECT $1::text::jsonb", '{"note": "a\\u0000b"}'),  # a NUL escaped in JSON
    }

    async def process(page: ItemsPage, _: RabbitMessage) -> None:
        attempts.append(page.page_id)
        await runtime.pool.fetchval(*queries[page.page_id])

    async def give_up(page: ItemsPage, reason: str) -> None:
        given_up.append(reason)

    subscribe_router = RabbitRouter()
    subscribe(subscribe_router, runtime, queue, runtime.topology.work, ItemsPage, process, give_up)
    runtime.broker.include_router(subscribe_router)
    await runtime.broker.connect()
    await declare_topology(runtime.broker, runtime.topology)
    await runtime.broker.start()
    for page_id in queries:
        await runtime.send_work(ItemsPage(campaign_id=1, page_id=page_id, item_ids=[1]))

    letters = await _dead_letters(queue.name, len(queries))
    reasons = sorted(str(m.headers["x-mailroom-error"]) for m in letters)
    assert sorted(attempts) == [1, 2, 3], "each tried once, never retried"
    assert len(given_up) == 3
    assert all(r.startswith("the database refused the data for good (") for r in reasons)
    assert any("DataError" in r and "out of int32 range" in r for r in reasons), reasons
    assert any("CharacterNotInRepertoireError" in r for r in reasons), reasons
    assert any("UntranslatableCharacterError" in r for r in reasons), reasons


async def test_an_error_of_our_own_before_the_handler_counts_towards_the_delivery_limit(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in what runs before the handler (here the log fields) is settled like the
    handler's own error: retried up to the delivery limit, then given up and dead-lettered
    with the error, never requeued for as long as the broker lets it."""
    queue = runtime.topology.item_pages
    calls: list[int] = []
    given_up: list[str] = []

    def broken_log_fields(event: ItemsPage) -> dict[str, object]:
        calls.append(event.page_id)
        raise AttributeError("'str' object has no attribute 'item_id'")

    async def process(page: ItemsPage, _: RabbitMessage) -> None:
        raise AssertionError("never reached")

    async def give_up(page: ItemsPage, reason: str) -> None:
        given_up.append(reason)

    monkeypatch.setattr(intake, "log_fields", broken_log_fields)
    router = RabbitRouter()
    subscribe(router, runtime, queue, runtime.topology.work, ItemsPage, process, give_up)
    runtime.broker.include_router(router)
    await runtime.broker.connect()
    await declare_topology(runtime.broker, runtime.topology)
    await runtime.broker.start()
    await runtime.send_work(ItemsPage(campaign_id=1, page_id=5, item_ids=[1]))

    (letter,) = await _dead_letters(queue.name, 1)
    reason = str(letter.headers["x-mailroom-error"])
    assert reason.startswith("failed 3 times, last error: AttributeError("), reason
    assert calls == [5, 5, 5], "tried up to the delivery limit, no further"
    assert given_up == [reason]
