"""The AsyncAPI 3.0 document of every message Mailroom publishes or consumes, from the code."""

from __future__ import annotations

import json
from typing import Any

from mailroom_common import events
from mailroom_common.broker import Topology

PREFIX = "{prefix}"

# routing key -> (exchange, who publishes, who consumes, description)
MESSAGES: dict[str, tuple[str, str, str, str]] = {
    "campaign.launch": (
        "commands",
        "marketers, the CRM, `mailroom campaign launch`",
        "item_generator",
        "Launch a draft campaign, now or at send_at.",
    ),
    "campaign.pause": (
        "commands",
        "marketers, the CRM",
        "item_generator",
        "Stop generating and sending; resume continues.",
    ),
    "campaign.resume": (
        "commands",
        "marketers, the CRM",
        "item_generator",
        "Continue a paused campaign.",
    ),
    "campaign.cancel": (
        "commands",
        "marketers, the CRM",
        "item_generator",
        "Skip every item not yet sending.",
    ),
    "items.page": (
        "work",
        "item_generator",
        "message_processor",
        "A page of campaign item ids to render.",
    ),
    "outbound.batch": (
        "work",
        "message_processor, autoresponder, outbound_sender (retries)",
        "outbound_sender",
        "Rendered emails, up to MAILROOM_BATCH_SIZE per message. Autoresponder batches"
        " (kind autoresponder) use routing key outbound.priority: the sender's priority lane.",
    ),
    "delivery.results": (
        "events",
        "outbound_sender, message_processor",
        "completion",
        "What happened to each email of a batch.",
    ),
    "campaign.generated": (
        "events",
        "item_generator",
        "completion",
        "Every item of a campaign exists.",
    ),
    "campaign.completed": (
        "events",
        "completion, item_generator (cancel), message_processor (a broken template)",
        "anyone",
        "A campaign ended, with its final status (completed, failed, cancelled), its counts"
        " by item status and, for a failed one, the reason.",
    ),
    "campaign.paused": (
        "events",
        "item_generator",
        "anyone",
        "A campaign was paused, and why: its work waits in the database until it resumes.",
    ),
    "campaign.resumed": (
        "events",
        "item_generator",
        "anyone",
        "A paused campaign went back to the status it was paused from.",
    ),
    "settings.changed": (
        "events",
        "config",
        "every service",
        "An administrator changed a settings group.",
    ),
    "job.run": (
        "events",
        "`mailroom jobs run`, the config service (POST /admin/jobs/{name}/run)",
        "every process (its own exclusive queue), acted on by the replicas of that job",
        "Run a job now: every replica of it wakes its periodic work (the generator's poll and"
        " page republishing, the completion sweep, the autoresponder scheduler, the bounce"
        " mailbox poll). Jobs whose work only arrives as messages have nothing to run.",
    ),
    "bounce.detected": (
        "events",
        "bounce_processor, outbound_sender (a hard bounce at send time)",
        "anyone (the CRM)",
        "A bounce or complaint proven (signed VERP address or Message-ID; for a provider"
        " webhook's event without a Message-ID, the recent send to its recipient) to be about"
        " one of our emails was recorded, from the bounce mailbox or a provider webhook;"
        " suppressed says whether the address will get nothing more. Unproven bounces are"
        " recorded but announce nothing. The outbound sender announces an address refused"
        " for good at send time (550 5.1.1 at RCPT or DATA).",
    ),
    "contact.unsubscribed": (
        "events",
        "subscriptions",
        "anyone (the CRM)",
        "A contact unsubscribed from lists (or from everything: then also suppressed).",
    ),
    "contact.subscribed": (
        "events",
        "the CRM, `mailroom contacts import`",
        "autoresponder",
        "A contact subscribed to a list: autoresponders of that list fire once per event_id.",
    ),
    "contacts.subscribed": (
        "events",
        "`mailroom contacts import`, subscriptions (contact.upserted)",
        "autoresponder",
        "Contacts subscribed to a list, up to 10,000 in one message (an import announces its"
        " new memberships in batches): the same as one contact.subscribed for each.",
    ),
    "contact.event": (
        "events",
        "the CRM",
        "autoresponder",
        "Something a contact did (type): autoresponders of that type fire once per event_id.",
    ),
    "contact.upserted": (
        "events",
        "the CRM",
        "subscriptions (queue <p>.subscriptions.contacts)",
        "The CRM's contacts by crm_id, up to 1,000 in one message: created or updated with"
        " their fields and list memberships (a list not known is created; subscribed never"
        " resubscribes an unsubscribed membership). A contact that cannot be taken fails"
        " alone; new memberships are announced as contacts.subscribed.",
    ),
    "contact.upserted.done": (
        "events",
        "subscriptions",
        "the CRM",
        "The answer to a contact.upserted (its correlation_id): counts, and each contact that"
        " failed with the reason.",
    ),
    "contact.erased": (
        "events",
        "the CRM",
        "subscriptions (queue <p>.subscriptions.contacts)",
        "Erase people (GDPR article 17) by crm_id and/or address: their address and fields"
        " leave every table; counts stay; a suppression keeps only a hash of the address.",
    ),
    "contact.erased.done": (
        "events",
        "subscriptions",
        "the CRM",
        "The answer to a contact.erased (its correlation_id), also when there was nothing to"
        " erase (unknown ids, or erased already).",
    ),
}


def _key(routing_key: str) -> str:
    return routing_key.replace(".", "_")


def build_document() -> dict[str, Any]:
    schemas = events.json_schemas()
    missing = set(schemas) ^ set(MESSAGES)
    if missing:
        raise RuntimeError(f"AsyncAPI descriptions and event models differ: {sorted(missing)}")
    topology = Topology(prefix=PREFIX, delivery_limit=0, retry_delays_ms=())
    exchanges = {
        "commands": topology.commands,
        "events": topology.events,
        "work": topology.work,
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components: dict[str, Any] = {"messages": {}, "schemas": {}}
    for routing_key, (exchange, publishers, consumers, description) in MESSAGES.items():
        name = _key(routing_key)
        schema = schemas[routing_key]
        definitions = schema.pop("$defs", {})
        components["schemas"].update(definitions)
        components["schemas"][name] = json.loads(
            json.dumps(schema).replace("#/$defs/", "#/components/schemas/")
        )
        components["messages"][name] = {
            "name": routing_key,
            "contentType": "application/json",
            "summary": description,
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        exchange_obj = exchanges[exchange]
        channels[name] = {
            "address": routing_key,
            "description": f"Published by {publishers}; consumed by {consumers}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange_obj.name,
                        "type": exchange_obj.type.value,
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "bindings": {
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": exchange != "events",
                    "bindingVersion": "0.3.0",
                }
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Mailroom",
            "version": "1",
            "description": (
                "Commands and events of Mailroom. Exchange names start with the deployment's "
                "MAILROOM_QUEUE_PREFIX ({prefix}). Every message is persistent and JSON, "
                "carries schema_version, and a consumer dead-letters one it cannot read, with "
                "the reason in the x-mailroom-error header."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def render() -> str:
    return json.dumps(build_document(), indent=2, sort_keys=True) + "\n"
