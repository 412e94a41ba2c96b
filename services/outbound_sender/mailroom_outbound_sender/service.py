"""outbound_sender: delivers rendered emails through the global SMTP account."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import OutboundBatch
from mailroom_common.intake import subscribe
from mailroom_common.runtime import Runtime
from mailroom_common.service import PeriodicTask, Service

from mailroom_outbound_sender.sender import OutboundSender


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.outbound_batches
    sender = OutboundSender(runtime)

    async def process(batch: OutboundBatch, message: RabbitMessage) -> None:
        await sender.handle_batch(batch, redelivered=bool(message.raw_message.redelivered))

    work = runtime.topology.work
    subscribe(router, runtime, queue, work, OutboundBatch, process, sender.give_up_batch)

    # the priority lane (autoresponders): its own queue and consumer, so it never waits
    # behind a campaign's backlog
    priority = runtime.topology.outbound_priority

    subscribe(router, runtime, priority, work, OutboundBatch, process, sender.give_up_batch)

    # settings.changed reloads at once; this catches a change whose event was missed
    reload = PeriodicTask(
        "reload-smtp-account", runtime.settings.settings_recheck_seconds, sender.reload_account
    )
    return Service(
        "outbound_sender",
        router,
        periodic=[reload],
        on_start=[sender.start],
        on_stop=[sender.stop],
        on_settings_changed=[sender.on_settings_changed],
    )
