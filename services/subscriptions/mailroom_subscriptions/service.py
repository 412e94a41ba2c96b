"""subscriptions: the footer's two links, public pages on MAILROOM_HTTP_PORT; and the CRM's
contacts (contact.upserted, contact.erased on `<p>.subscriptions.contacts`), since this
service owns what a person's memberships and suppressions are."""

from __future__ import annotations

import logging

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common.events import CRM_CONTACT_EVENTS, ContactErased, ContactsUpserted, Event
from mailroom_common.intake import Rejected, subscribe
from mailroom_common.jobs import SYNC_CRM_CONTACTS
from mailroom_common.runtime import Runtime
from mailroom_common.service import PeriodicTask, Service

from mailroom_subscriptions.api import PATHS, create_app
from mailroom_subscriptions.crm_upsert import announce_left_over, upsert_contacts
from mailroom_subscriptions.erasure import erase_contacts

log = logging.getLogger(__name__)

LEFT_OVER_POLL_SECONDS = 30.0


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()

    async def process(event: Event, message: RabbitMessage) -> None:
        if isinstance(event, ContactsUpserted):
            upserted = await upsert_contacts(runtime, event, message.body)
            if upserted.failed:
                # the reasons (which may quote an address) are in the answer, not the log
                log.warning(
                    "contact.upserted: %d of %d contacts failed (crm_ids %s)",
                    len(upserted.failed),
                    len(event.contacts),
                    ", ".join(f.crm_id for f in upserted.failed[:10]),
                )
            await runtime.announce(upserted)
        elif isinstance(event, ContactErased):
            await runtime.announce(await erase_contacts(runtime, event))
        else:
            raise Rejected(f"not a contact event: {event.routing_key}")

    subscribe(
        router,
        runtime,
        runtime.topology.crm_contacts,
        runtime.topology.events,
        CRM_CONTACT_EVENTS,
        process,
    )
    # also the job's periodic run, so that it reports success while the CRM is quiet
    left_over = PeriodicTask(
        "crm-contacts-left-over",
        LEFT_OVER_POLL_SECONDS,
        lambda: announce_left_over(runtime),
        job=SYNC_CRM_CONTACTS,
    )
    return Service(
        "subscriptions",
        router,
        periodic=[left_over],
        http_app=create_app(runtime),
        http_paths=PATHS,
    )
