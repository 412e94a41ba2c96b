"""docs/asyncapi.json: what `mailroom asyncapi` makes (CI fails when it is stale), a valid
AsyncAPI 3.0.0 document, and complete: every message, queue, dead-letter queue and retry
tier, each service's receive and send operations, the servers, the x-mailroom-error header.

tests/support/asyncapi-3.0.0.schema.json is the AsyncAPI Initiative's JSON schema of the
3.0.0 specification (npm package @asyncapi/specs 6.11.1, schemas/3.0.0-without-$id.json,
Apache License 2.0), minified: it also checks the AMQP bindings."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import CAMPAIGN_COMMANDS, REGISTRY, Event
from mailroom_common.intake import ERROR_HEADER

from mailroom.asyncapi import build_document, render

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.json"
SPECIFICATION = ROOT / "tests" / "support" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_committed_document_matches_the_code() -> None:
    assert DOCUMENT.read_text() == render(), "run: mailroom asyncapi --out docs/asyncapi.json"


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SPECIFICATION.read_text()))
    problems = [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]
    assert problems == []
    broken = dict(document, operations={"x": {"action": "publish", "channel": {}}})
    assert list(validator.iter_errors(broken)), "the schema check must be able to fail"


def test_every_reference_resolves_and_every_address_parameter_is_declared(
    document: dict[str, Any],
) -> None:
    for ref in _refs(document):
        _resolve(document, ref)
    for name, channel in document["channels"].items():
        declared = set(channel.get("parameters", {}))
        assert set(re.findall(r"{(\w+)}", channel["address"])) == declared, name
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        assert operation["messages"], name
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), name


def test_every_registered_message_has_a_channel_and_a_payload(document: dict[str, Any]) -> None:
    addresses = {c["address"]: c for c in document["channels"].values()}
    for routing_key, model in REGISTRY.items():
        channel = addresses[routing_key]
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == f"{{prefix}}.{model.exchange}"
        message = document["components"]["messages"][routing_key.replace(".", "_")]
        payload = _resolve(document, message["payload"]["$ref"])
        assert "schema_version" in payload["properties"]


def test_commands_are_on_the_commands_exchange() -> None:
    assert {m.exchange for m in CAMPAIGN_COMMANDS.values()} == {"commands"}


def test_every_queue_has_its_consumer_and_its_dead_letter_queue(document: dict[str, Any]) -> None:
    topology = Topology(prefix="{prefix}", delivery_limit=0, retry_delays_ms=())
    channels = document["channels"]
    queues = {
        c["bindings"]["amqp"]["queue"]["name"]: name
        for name, c in channels.items()
        if c["bindings"]["amqp"]["is"] == "queue"
    }
    receivers = {
        o["channel"]["$ref"].removeprefix("#/channels/"): o
        for o in document["operations"].values()
        if o["action"] == "receive"
    }
    for queue, _exchange, _key in topology.bindings():
        assert queues[queue.name] in receivers, queue.name
        assert channels[queues[queue.name]]["messages"], queue.name
        dlq = channels[queues[f"{queue.name}.dlq"]]
        assert list(dlq["messages"]) == ["dead_letter"]
    assert "{prefix}.outbound.retry.{delay_ms}ms" in queues
    assert "{prefix}.outbound.priority-retry.{delay_ms}ms" in queues
    assert "{prefix}.settings-changed.{instance}" in queues


def test_each_service_receives_and_sends(document: dict[str, Any]) -> None:
    operations = document["operations"]
    sends = {name.split(".")[0] for name, o in operations.items() if o["action"] == "send"}
    receives = {name.split(".")[0] for name, o in operations.items() if o["action"] == "receive"}
    assert {
        "item_generator",
        "message_processor",
        "outbound_sender",
        "autoresponder",
        "completion",
    } <= receives
    assert {
        "item_generator",
        "message_processor",
        "outbound_sender",
        "completion",
        "config",
        "bounce_processor",
        "subscriptions",
        "autoresponder",
    } <= sends
    activity = operations["completion.send.contact_activity"]
    assert activity["bindings"]["amqp"] == {
        "deliveryMode": 2,
        "mandatory": False,
        "bindingVersion": "0.3.0",
    }


def test_dead_letters_carry_the_reason_header_and_servers_are_amqp(
    document: dict[str, Any],
) -> None:
    message = document["components"]["messages"]["dead_letter"]
    headers = _resolve(document, message["headers"]["$ref"])
    assert ERROR_HEADER in headers["required"]
    assert (
        document["channels"]["dead_letters"]["bindings"]["amqp"]["exchange"]["name"]
        == "{prefix}.dlx"
    )
    assert "every_process.send.dead_letter" in document["operations"]
    assert {s["protocol"] for s in document["servers"].values()} == {"amqp", "amqps"}


@pytest.fixture
def new_event() -> Iterator[type[Event]]:
    class ContactNoted(Event):
        """Something a later engineer adds."""

        routing_key: ClassVar[str] = "contact.noted"
        publishers: ClassVar[tuple[str, ...]] = ("subscriptions",)
        note: str

    try:
        yield ContactNoted
    finally:
        del REGISTRY["contact.noted"]


def test_an_event_added_in_the_code_appears_by_itself(new_event: type[Event]) -> None:
    document = build_document()
    assert document["channels"]["event.contact_noted"]["address"] == "contact.noted"
    assert "subscriptions.send.contact_noted" in document["operations"]
    payload = document["components"]["schemas"]["contact_noted"]
    assert "note" in payload["properties"]
