"""The AsyncAPI 3.0 document of Mailroom's broker interface, generated from the code.

Made from the registry of message models (`events.REGISTRY`: every model with a routing key,
with its exchange, publishers and summary) and the broker topology (`broker.Topology`: every
queue, what it is bound to, its dead-letter queue, the retry tiers), so a message or a queue
added in the code appears here without a word written for it. tests/unit/test_asyncapi.py
fails when docs/asyncapi.json is not what this makes (`mailroom asyncapi --out
docs/asyncapi.json`) and checks the document against the AsyncAPI 3.0.0 JSON schema.

- servers: RabbitMQ (AMQP 0-9-1, plain and TLS), user and password.
- channels: one per routing key of an exchange (`event.*`, `command.*`, `work.*`), one per
  queue (`queue.*`), per dead-letter queue (`dlq.*`) and per retry tier (`retry.*`), plus the
  dead-letter exchange (`dead_letters`); AMQP channel bindings name the exchange or queue.
- operations: what each service receives (its queues) and sends (the messages it publishes),
  with AMQP operation bindings; consumers dead-letter what they cannot read, with the reason
  in the `x-mailroom-error` header (the `dead_letter` message).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from faststream.rabbit import RabbitExchange, RabbitQueue
from mailroom_common import events
from mailroom_common.broker import PRIORITY_ROUTING_KEY, Topology
from mailroom_common.intake import (
    DEAD_LETTERED_AT_HEADER,
    DELIVERIES_HEADER,
    ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)

from mailroom.services import SERVICES

PREFIX = "{prefix}"
BINDING_VERSION = "0.3.0"
EVERY_PROCESS = "every_process"
# who else publishes: named in the document, but they are not Mailroom's operations
OUTSIDE = {"crm": "the CRM", "cli": "the `mailroom` command"}
# routing keys a model is also published with (the priority lane, the retry tiers)
ALSO_ROUTED: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "outbound.batch": [
        (
            PRIORITY_ROUTING_KEY,
            ("autoresponder", "outbound_sender"),
            "Autoresponder batches (kind autoresponder): the sender's priority lane.",
        ),
        (
            "retry.{delay_ms}",
            ("outbound_sender",),
            "Temporary failures, to the retry tier of delay_ms; back as outbound.batch.",
        ),
        (
            "priority-retry.{delay_ms}",
            ("outbound_sender",),
            "Temporary failures of the priority lane; back as outbound.priority.",
        ),
    ],
}


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _unprefixed(name: str) -> str:
    return name.removeprefix(f"{PREFIX}.")


def _topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic match: * is one word, # is zero or more."""
    regex = re.escape(pattern).replace(r"\*", r"[^.]+").replace(r"\#", r".*")
    return re.fullmatch(regex, routing_key) is not None


def _exchange_binding(exchange: RabbitExchange) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.type.value,
                "durable": exchange.durable,
                "autoDelete": exchange.auto_delete,
                "vhost": "/",
            },
            "bindingVersion": BINDING_VERSION,
        }
    }


def _queue_binding(queue: RabbitQueue) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {
                "name": queue.name,
                "durable": queue.durable,
                "exclusive": queue.exclusive,
                "autoDelete": queue.auto_delete,
                "vhost": "/",
            },
            "bindingVersion": BINDING_VERSION,
        }
    }


def _parameters(address: str) -> dict[str, Any]:
    names = re.findall(r"{(\w+)}", address)
    return {name: {"$ref": f"#/components/parameters/{name}"} for name in names}


def _arguments(queue: RabbitQueue) -> str:
    arguments = queue.arguments or {}
    kind = "quorum" if arguments.get("x-queue-type") == "quorum" else "classic"
    told = [f"{k}={v}" for k, v in sorted(arguments.items()) if k != "x-queue-type"]
    return f"{kind} queue" + (f" ({', '.join(told)})" if told else "")


class _Document:
    def __init__(self) -> None:
        self.topology = Topology(prefix=PREFIX, delivery_limit=0, retry_delays_ms=(0,))
        self.exchanges = {
            "commands": self.topology.commands,
            "events": self.topology.events,
            "work": self.topology.work,
        }
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        # routing key -> the message channel id (the main key of each model, and its aliases)
        self.route_channel: dict[str, str] = {}
        self.route_message: dict[str, str] = {}
        self.route_exchange: dict[str, str] = {}

    # --- messages -------------------------------------------------------------------------

    def add_messages(self) -> None:
        for routing_key, model in sorted(events.REGISTRY.items()):
            name = _id(routing_key)
            schema = model.model_json_schema()
            for key, definition in schema.pop("$defs", {}).items():
                self.schemas[key] = _components_refs(definition)
            self.schemas[name] = _components_refs(schema)
            self.messages[name] = {
                "name": routing_key,
                "title": model.__name__,
                "summary": model.summary or (model.__doc__ or "").strip().split("\n\n")[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
                "bindings": {
                    "amqp": {"messageType": routing_key, "bindingVersion": BINDING_VERSION}
                },
            }
            self.add_route(model, routing_key, model.publishers, "")
            for alias, publishers, description in ALSO_ROUTED.get(routing_key, []):
                self.add_route(model, alias, publishers, description)
        self.messages["dead_letter"] = {
            "name": "dead letter",
            "title": "A message a consumer gave up on",
            "summary": (
                "The message as it came (body, content type, type and headers kept), with why"
                f" it was refused in {ERROR_HEADER} and where it came from. `mailroom dlq"
                " show|replay|purge` reads them; RabbitMQ's own dead letters (the delivery"
                " limit) carry x-death instead."
            ),
            "headers": {"$ref": "#/components/schemas/dead_letter_headers"},
            "payload": {"description": "The body as it came: any bytes."},
        }
        self.schemas["dead_letter_headers"] = _dead_letter_headers()

    def add_route(
        self,
        model: type[events.Event],
        routing_key: str,
        publishers: tuple[str, ...],
        description: str,
    ) -> None:
        name = _id(model.routing_key)
        exchange_name = model.exchange
        channel = f"{exchange_name.rstrip('s')}.{_id(routing_key)}"
        outside = [OUTSIDE[p] for p in publishers if p in OUTSIDE]
        ours = [p for p in publishers if p not in OUTSIDE]
        who = ", ".join(ours + outside) or "not declared"
        listeners = self.consumers(exchange_name, routing_key) + (
            [model.listeners] if model.listeners else []
        )
        self.channels[channel] = {
            "address": routing_key,
            "title": f"{routing_key} on the {exchange_name} exchange",
            "description": " ".join(
                part
                for part in (
                    description,
                    f"Published by {who}; received by {', '.join(listeners) or 'nobody'}.",
                )
                if part
            ),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": _exchange_binding(self.exchanges[exchange_name]),
        }
        parameters = _parameters(routing_key)
        if parameters:
            self.channels[channel]["parameters"] = parameters
        self.route_channel[routing_key] = channel
        self.route_message[routing_key] = name
        self.route_exchange[routing_key] = exchange_name
        for publisher in ours:
            self.operations[f"{publisher}.send.{_id(routing_key)}"] = {
                "action": "send",
                "title": f"{publisher} publishes {routing_key}",
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
                "bindings": {
                    "amqp": {
                        "deliveryMode": 2,
                        "mandatory": exchange_name != "events",
                        "bindingVersion": BINDING_VERSION,
                    }
                },
            }

    def consumers(self, exchange: str, routing_key: str) -> list[str]:
        found = [
            _service_of(queue)
            for queue, bound_to, pattern in self.topology.bindings()
            if _unprefixed(bound_to.name) == exchange and _topic_matches(pattern, routing_key)
        ]
        if exchange == "events" and routing_key in ("settings.changed", "job.run"):
            found.append("every process (a queue of its own)")
        return sorted(set(found))

    # --- queues ---------------------------------------------------------------------------

    def add_queues(self) -> None:
        bound: dict[str, list[tuple[RabbitQueue, str, str]]] = defaultdict(list)
        for queue, exchange, pattern in self.topology.bindings():
            bound[queue.name].append((queue, _unprefixed(exchange.name), pattern))
        for _name, bindings in sorted(bound.items()):
            queue = bindings[0][0]
            self.add_queue(queue, bindings, _service_of(queue))
            self.add_dead_letter_queue(self.topology.dead_letter_queue(queue))
        listeners = [
            (_per_instance(self.topology.settings_listener), self.topology.settings_dead_letters),
            (_per_instance(self.topology.job_run_listener), self.topology.job_run_dead_letters),
        ]
        for listener, dead_letters in listeners:
            key = listener.routing_key or ""
            self.add_queue(listener, [(listener, "events", key)], EVERY_PROCESS)
            self.add_dead_letter_queue(dead_letters, shared=True)
        for priority in (False, True):
            self.add_retry_queue(priority)

    def add_queue(
        self, queue: RabbitQueue, bindings: list[tuple[RabbitQueue, str, str]], service: str
    ) -> None:
        channel = f"queue.{_id(_unprefixed(queue.name))}"
        messages = {
            self.route_message[key]: {"$ref": f"#/components/messages/{self.route_message[key]}"}
            for key in self.route_message
            if any(
                exchange == self.route_exchange[key] and _topic_matches(pattern, key)
                for _, exchange, pattern in bindings
            )
        }
        keys = ", ".join(f"{pattern} ({exchange})" for _, exchange, pattern in bindings)
        self.channels[channel] = {
            "address": queue.name,
            "title": f"queue {_unprefixed(queue.name)}",
            "description": (
                f"A {_arguments(queue)} consumed by {service.replace('_', ' ')}, bound to"
                f" {keys}. What its consumer cannot read goes to its dead-letter queue with"
                f" the reason in {ERROR_HEADER}."
            ),
            "parameters": _parameters(queue.name),
            "messages": messages,
            "bindings": _queue_binding(queue),
        }
        self.operations[f"{service}.receive.{_id(_unprefixed(queue.name))}"] = {
            "action": "receive",
            "title": f"{service} consumes {_unprefixed(queue.name)}",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
            "bindings": {"amqp": {"ack": True, "bindingVersion": BINDING_VERSION}},
        }

    def add_dead_letter_queue(self, queue: RabbitQueue, shared: bool = False) -> None:
        channel = f"dlq.{_id(_unprefixed(queue.name).removesuffix('.dlq'))}"
        whose = "every process's listener queue of that kind" if shared else "its queue"
        self.channels[channel] = {
            "address": queue.name,
            "title": f"dead-letter queue {_unprefixed(queue.name)}",
            "description": (
                f"A {_arguments(queue)} bound to the dead-letter exchange ({PREFIX}.dlx) with"
                f" routing key {queue.routing_key}: what the consumers of {whose} gave up on."
                " Nobody consumes it: it keeps what needs a person (`mailroom dlq`)."
            ),
            "parameters": _parameters(queue.name),
            "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
            "bindings": _queue_binding(queue),
        }

    def add_retry_queue(self, priority: bool) -> None:
        queue = self.topology.retry_queue(0, priority)
        address = queue.name.replace(".0ms", ".{delay_ms}ms")
        lane = "priority-retry" if priority else "retry"
        back = PRIORITY_ROUTING_KEY if priority else "outbound.batch"
        channel = f"retry.{_id(lane)}"
        hidden = ("x-message-ttl", "x-queue-type")
        arguments = {k: v for k, v in (queue.arguments or {}).items() if k not in hidden}
        told = ", ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
        self.channels[channel] = {
            "address": address,
            "title": f"{lane} tier",
            "description": (
                f"One quorum queue per back-off tier (MAILROOM_RETRY_DELAYS_SECONDS), bound to"
                f" the work exchange with routing key {lane}.{{delay_ms}}: no consumer; each"
                f" message waits delay_ms (x-message-ttl) and is dead-lettered back to the work"
                f" exchange as {back} ({told})."
            ),
            "parameters": _parameters(address),
            "messages": {"outbound_batch": {"$ref": "#/components/messages/outbound_batch"}},
            "bindings": _queue_binding(
                RabbitQueue(address, durable=True, routing_key=f"{lane}.{{delay_ms}}")
            ),
        }

    def add_dead_letter_exchange(self) -> None:
        self.channels["dead_letters"] = {
            "address": "{queue}",
            "title": "the dead-letter exchange",
            "description": (
                "Every consumer publishes what it gives up on here, routed by the name of the"
                " queue it came from to that queue's dead-letter queue (dlq.*), with the reason"
                f" in {ERROR_HEADER}. The work queues also dead-letter here themselves"
                " (x-dead-letter-exchange) past the delivery limit policy."
            ),
            "parameters": _parameters("{queue}"),
            "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
            "bindings": _exchange_binding(self.topology.dead_letters),
        }
        self.operations[f"{EVERY_PROCESS}.send.dead_letter"] = {
            "action": "send",
            "title": "a consumer dead-letters a message it cannot read or gave up on",
            "channel": {"$ref": "#/channels/dead_letters"},
            "messages": [{"$ref": "#/channels/dead_letters/messages/dead_letter"}],
            "bindings": {
                "amqp": {"deliveryMode": 2, "mandatory": False, "bindingVersion": BINDING_VERSION}
            },
        }

    def render(self) -> dict[str, Any]:
        self.add_messages()
        self.add_queues()
        self.add_dead_letter_exchange()
        return {
            "asyncapi": "3.0.0",
            "info": {
                "title": "Mailroom",
                "version": str(events.Event.schema_major),
                "description": (
                    "Commands, events and work messages of Mailroom on RabbitMQ. Every name"
                    " starts with the deployment's MAILROOM_QUEUE_PREFIX ({prefix}). Every"
                    " message is persistent JSON and carries schema_version (MAJOR or"
                    ' "MAJOR.MINOR"): a consumer reads a newer minor, ignoring fields it does'
                    " not know (logged once), and dead-letters a newer major; it dead-letters"
                    f" a message it cannot read with the reason in the {ERROR_HEADER} header"
                    " (docs/events.md)."
                ),
            },
            "defaultContentType": "application/json",
            "servers": _servers(),
            "channels": self.channels,
            "operations": self.operations,
            "components": {
                "schemas": self.schemas,
                "messages": self.messages,
                "parameters": _parameter_definitions(),
                "securitySchemes": {
                    "user_password": {
                        "type": "userPassword",
                        "description": "The user and password of MAILROOM_RABBITMQ_URL.",
                    }
                },
            },
        }


def _per_instance(listener: Callable[[str], RabbitQueue]) -> RabbitQueue:
    """A per-process listener queue, its process's host:pid as the parameter instance."""
    queue = listener("INSTANCE")
    return RabbitQueue(
        queue.name.replace("INSTANCE", "{instance}"),
        exclusive=queue.exclusive,
        auto_delete=queue.auto_delete,
        routing_key=queue.routing_key,
    )


def _service_of(queue: RabbitQueue) -> str:
    service = _unprefixed(queue.name).split(".")[0]
    if service not in SERVICES:
        raise RuntimeError(f"queue {queue.name} belongs to no service")
    return service


def _components_refs(schema: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        json.dumps(schema).replace("#/$defs/", "#/components/schemas/")
    )
    return result


def _dead_letter_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [ERROR_HEADER],
        "properties": {
            ERROR_HEADER: {
                "type": "string",
                "maxLength": 1000,
                "description": (
                    "Why: e.g. 'invalid campaign.launch message: campaign_id: Input should be"
                    " a valid integer', or 'failed 5 times, last error: ...'."
                ),
            },
            "x-mailroom-queue": {"type": "string", "description": "The queue it was taken from."},
            ORIGINAL_EXCHANGE_HEADER: {"type": "string", "description": "Where it came from."},
            ORIGINAL_ROUTING_KEY_HEADER: {"type": "string", "description": "Its routing key."},
            DELIVERIES_HEADER: {"type": "integer", "description": "Deliveries, this one too."},
            DEAD_LETTERED_AT_HEADER: {"type": "integer", "description": "Unix seconds."},
            "x-mailroom-replays": {
                "type": "integer",
                "description": "Times `mailroom dlq replay` sent it back.",
            },
            "x-death": {
                "type": "array",
                "description": "RabbitMQ's own record, on what it dead-lettered itself.",
            },
        },
    }


def _servers() -> dict[str, Any]:
    return {
        "rabbitmq": _server(
            "amqp", "127.0.0.1", 5672, "RabbitMQ, as MAILROOM_RABBITMQ_URL names it (amqp://)."
        ),
        "rabbitmq_tls": _server(
            "amqps", "rabbitmq", 5671, "RabbitMQ over TLS (MAILROOM_RABBITMQ_URL amqps://)."
        ),
    }


def _server(protocol: str, host: str, port: int, description: str) -> dict[str, Any]:
    return {
        "host": "{host}:{port}",
        "protocol": protocol,
        "protocolVersion": "0-9-1",
        "description": description,
        "variables": {
            "host": {"default": host},
            "port": {"default": str(port)},
            "vhost": {"default": "", "description": "Empty: the default vhost /."},
        },
        "pathname": "/{vhost}",
        "security": [{"$ref": "#/components/securitySchemes/user_password"}],
    }


def _parameter_definitions() -> dict[str, Any]:
    return {
        "prefix": {
            "default": "mailroom",
            "description": "MAILROOM_QUEUE_PREFIX: every exchange and queue name starts with it.",
        },
        "instance": {
            "description": "The process's host:pid (characters outside [A-Za-z0-9_.-] as -)."
        },
        "delay_ms": {
            "description": "A back-off tier in milliseconds (MAILROOM_RETRY_DELAYS_SECONDS)."
        },
        "queue": {"description": "The name of the queue a dead letter came from."},
    }


def build_document() -> dict[str, Any]:
    return _Document().render()


def render() -> str:
    return json.dumps(build_document(), indent=2, sort_keys=True) + "\n"
