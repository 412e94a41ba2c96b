"""message_processor: renders pages of campaign items into outbound batches."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import ItemsPage
from mailroom_common.intake import subscribe
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom_message_processor.processor import MessageProcessor

# one page rendering while another publishes its batches: rendering holds the GIL, more
# pages at once would only hold more emails in memory
PAGES_AT_ONCE = 2


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.item_pages
    processor = MessageProcessor(runtime)

    async def process(page: ItemsPage, _: RabbitMessage) -> None:
        await processor.handle_page(page)

    subscribe(
        router,
        runtime,
        queue,
        runtime.topology.work,
        ItemsPage,
        process,
        processor.give_up_page,
        prefetch=PAGES_AT_ONCE,
    )

    return Service("message_processor", router)
