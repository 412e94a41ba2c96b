"""message_processor: renders pages of campaign items into outbound batches."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import ItemsPage
from mailroom_common.intake import subscribe
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom_message_processor.processor import MessageProcessor


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.item_pages
    processor = MessageProcessor(runtime)

    async def process(page: ItemsPage, _: RabbitMessage) -> None:
        await processor.handle_page(page)

    subscribe(
        router, runtime, queue, runtime.topology.work, ItemsPage, process, processor.give_up_page
    )

    return Service("message_processor", router)
