"""item_generator: turns launched campaigns into campaign items, page by page."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import CAMPAIGN_COMMANDS, CampaignLaunch, CampaignResume, Event
from mailroom_common.intake import subscribe
from mailroom_common.jobs import GENERATE_CAMPAIGN_ITEMS
from mailroom_common.runtime import Runtime
from mailroom_common.service import PeriodicTask, Service

from mailroom_item_generator import commands
from mailroom_item_generator.generator import ItemGenerator


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.campaign_commands
    generator = ItemGenerator(runtime)
    generate = PeriodicTask(
        "generate-campaign-items",
        runtime.settings.generation_poll_seconds,
        generator.run_due,
        job=GENERATE_CAMPAIGN_ITEMS,
    )
    republish = PeriodicTask(
        "republish-item-pages",
        runtime.settings.sweep_interval_seconds,
        generator.republish_unpublished_pages,
        job=GENERATE_CAMPAIGN_ITEMS,
    )

    async def process(command: Event, message: RabbitMessage) -> None:
        await commands.dispatch(
            runtime,
            command,
            resumed=generator.republish_unpublished_pages,
            message_id=message.raw_message.message_id,
        )
        if isinstance(command, CampaignLaunch | CampaignResume):
            generate.wake.set()

    subscribe(router, runtime, queue, runtime.topology.commands, CAMPAIGN_COMMANDS, process)

    return Service("item_generator", router, periodic=[generate, republish])
