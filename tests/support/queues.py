"""Queues on the test broker, looked at and removed as a test needs them."""

from __future__ import annotations

import aio_pika

from tests.support.environment import RABBITMQ_URL


async def queue_depth(name: str) -> int:
    """How many messages wait (ready) in the queue `name`, which must exist."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(name, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def delete_queues(*names: str) -> None:
    """Delete those queues (one that does not exist is no error)."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
