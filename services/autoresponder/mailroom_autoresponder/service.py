"""autoresponder: trigger events become items; due items go out on the priority lane."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import (
    AUTORESPONDER_TRIGGERS,
    ContactEvent,
    ContactsSubscribed,
    ContactSubscribed,
    Event,
)
from mailroom_common.intake import Rejected, subscribe
from mailroom_common.jobs import PROCESS_AUTORESPONDER_MESSAGES
from mailroom_common.runtime import Runtime
from mailroom_common.service import PeriodicTask, Service

from mailroom_autoresponder.scheduler import Scheduler
from mailroom_autoresponder.triggers import create_batch_items, create_items

# how often due items are looked for; an item due at once wakes the scheduler at once
POLL_SECONDS = 1.0


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.autoresponder_triggers
    scheduler = Scheduler(runtime)
    due = PeriodicTask(
        "autoresponder-due", POLL_SECONDS, scheduler.run_due, job=PROCESS_AUTORESPONDER_MESSAGES
    )

    async def process(event: Event, _: RabbitMessage) -> None:
        if isinstance(event, ContactsSubscribed):
            _created, due_now = await create_batch_items(runtime, event)
        elif isinstance(event, ContactSubscribed | ContactEvent):
            _created, due_now = await create_items(runtime, event)
        else:
            raise Rejected(f"not a trigger event: {event.routing_key}")
        if due_now:
            due.wake.set()

    subscribe(router, runtime, queue, runtime.topology.events, AUTORESPONDER_TRIGGERS, process)

    return Service("autoresponder", router, periodic=[due])
