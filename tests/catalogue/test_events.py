"""Bad-input catalogue: messages on the broker, against the real services' consumers.

Each case publishes one hostile message the way anyone with access to the broker could
(raw bytes, any content type), then a second message on the same queue. The answer: the
hostile one is in its queue's dead-letter queue with the reason in `x-mailroom-error`, and
the consumer went on to the second (it is handled too). Nothing is retried or left unsettled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import aio_pika
import pytest
from aio_pika.abc import HeadersType
from mailroom_common.broker import Topology
from mailroom_common.events import SettingsChanged
from mailroom_common.intake import ERROR_HEADER, MAX_BODY_BYTES
from mailroom_common.runner import ServiceProcess
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom.services import service_factory
from tests.catalogue.cases import Case, case_ids
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

BIG = 2**63  # one more than PostgreSQL's bigint holds
DEEP = b"[" * 100_000 + b"]" * 100_000
JSON = "application/json"
SENTINEL = b'{"sentinel": true}'
# the services whose consumers are attacked (bounce_processor, config, subscriptions have none)
CONSUMERS = (
    "item_generator",
    "message_processor",
    "outbound_sender",
    "completion",
    "autoresponder",
)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class EventCase(Case):
    exchange: Literal["commands", "work", "events"] = "commands"
    routing_key: str = ""
    body: bytes = b""
    content_type: str | None = JSON
    reason: str = ""  # the start of x-mailroom-error (the whole of it when `exact`)
    exact: bool = False
    headers: dict[str, str] = field(default_factory=dict)


CASES: list[Case] = [
    EventCase(
        "events-01",
        "campaign.launch whose body is not JSON (`not json{`)",
        "dead-lettered: not JSON, with the parser's position",
        routing_key="campaign.launch",
        body=b"not json{",
        reason="invalid campaign.launch message: not JSON: expected ident at line 1 column 2",
        exact=True,
    ),
    EventCase(
        "events-02",
        "campaign.launch with invalid UTF-8 in a string",
        "dead-lettered: not UTF-8, naming the byte",
        routing_key="campaign.launch",
        body=b'{"campaign_id": 1, "send_at": "\xff\xfe"}',
        reason="invalid campaign.launch message: not UTF-8 text: byte 0xff at offset 31",
        exact=True,
    ),
    EventCase(
        "events-03",
        "items.page nested 100,000 levels deep",
        "dead-lettered: nested too deeply (no RecursionError anywhere)",
        exchange="work",
        routing_key="items.page",
        body=DEEP,
        reason="invalid items.page message: not JSON we accept: nested too deeply (more than"
        " 200 levels)",
        exact=True,
    ),
    EventCase(
        "events-04",
        "delivery.results with an empty body",
        "dead-lettered: empty body",
        exchange="events",
        routing_key="delivery.results",
        body=b"",
        reason="invalid delivery.results message: empty body: expected a JSON object",
        exact=True,
    ),
    EventCase(
        "events-05",
        "contact.event with content type text/plain (a JSON body)",
        "dead-lettered: wrong content type",
        exchange="events",
        routing_key="contact.event",
        body=_json({"contact_id": 1, "type": "signup", "event_id": "e1"}),
        content_type="text/plain",
        reason="invalid contact.event message: content type 'text/plain': expected"
        " application/json",
        exact=True,
    ),
    EventCase(
        "events-06",
        "an unknown command, campaign.explode, on the commands exchange",
        "dead-lettered: unknown message type",
        routing_key="campaign.explode",
        body=_json({"campaign_id": 1}),
        reason="unknown message type 'campaign.explode'",
        exact=True,
    ),
    EventCase(
        "events-07",
        "items.page without item_ids",
        "dead-lettered: the missing field named",
        exchange="work",
        routing_key="items.page",
        body=_json({"campaign_id": 1, "page_id": 1}),
        reason="invalid items.page message: item_ids: Field required",
        exact=True,
    ),
    EventCase(
        "events-08",
        "contact.subscribed whose contact_id is a word",
        "dead-lettered: the field and the type named",
        exchange="events",
        routing_key="contact.subscribed",
        body=_json({"contact_id": "abc", "list_id": 1, "event_id": "e1"}),
        reason="invalid contact.subscribed message: contact_id: Input should be a valid integer",
    ),
    EventCase(
        "events-09",
        "campaign.launch with campaign_id 2^63 (retried five times before)",
        "dead-lettered at once: out of int64",
        routing_key="campaign.launch",
        body=_json({"campaign_id": BIG}),
        reason="invalid campaign.launch message: campaign_id: Input should be less than or equal"
        " to 9223372036854775807",
        exact=True,
    ),
    EventCase(
        "events-10",
        "items.page with a negative campaign_id and an item id 2^63",
        "dead-lettered: both fields named",
        exchange="work",
        routing_key="items.page",
        body=_json({"campaign_id": -5, "page_id": 1, "item_ids": [1, BIG]}),
        reason="invalid items.page message: campaign_id: Input should be greater than 0;"
        " item_ids.1: Input should be less than or equal to 9223372036854775807",
        exact=True,
    ),
    EventCase(
        "events-11",
        "contact.event with a NUL in its data (retried five times before)",
        "dead-lettered at once: the path of the NUL named",
        exchange="events",
        routing_key="contact.event",
        body=_json(
            {"contact_id": 1, "type": "signup", "event_id": "e1", "data": {"note": "a\x00b"}}
        ),
        reason="invalid contact.event message: data.note holds a NUL character, which"
        " PostgreSQL cannot store",
        exact=True,
    ),
    EventCase(
        "events-12",
        "contact.subscribed with a NUL in its event_id",
        "dead-lettered at once: NUL",
        exchange="events",
        routing_key="contact.subscribed",
        body=_json({"contact_id": 1, "list_id": 1, "event_id": "e\x001"}),
        reason="invalid contact.subscribed message: event_id holds a NUL character",
    ),
    EventCase(
        "events-13",
        "campaign.launch with an unknown field (`sendAt`, a misspelt send_at)",
        "dead-lettered: another spelling of a known field is refused (it would launch now)",
        routing_key="campaign.launch",
        body=_json({"campaign_id": 1, "sendAt": "2030-01-01T00:00:00Z"}),
        reason="invalid campaign.launch message: sendAt is not a field: did you mean send_at?",
        exact=True,
    ),
    EventCase(
        "events-14",
        "contact.subscribed with a field it does not know (from a newer CRM)",
        "tolerated (DESIGN.md): processed, and answered for what it is (an unknown contact)",
        exchange="events",
        routing_key="contact.subscribed",
        body=_json({"contact_id": 424242, "list_id": 1, "event_id": "e1", "source": "form"}),
        reason="unknown contact 424242",
        exact=True,
    ),
    EventCase(
        "events-15",
        "outbound.batch of 16 MiB + 1 byte",
        "dead-lettered without being parsed: over the body limit",
        exchange="work",
        routing_key="outbound.batch",
        body=b"x" * (MAX_BODY_BYTES + 1),
        reason=f"invalid outbound.batch message: body of {MAX_BODY_BYTES + 1} bytes: the limit"
        f" is {MAX_BODY_BYTES} bytes",
        exact=True,
    ),
    EventCase(
        "events-16",
        "settings.changed that is not JSON, to every process's listener",
        "dead-lettered to the settings DLQ; the listener hears the next change",
        exchange="events",
        routing_key="settings.changed",
        body=b"\x00\x01{",
        reason="invalid settings.changed message: not JSON: ",
    ),
    EventCase(
        "events-17",
        "settings.changed naming a group that does not exist",
        "dead-lettered to the settings DLQ with the allowed groups",
        exchange="events",
        routing_key="settings.changed",
        body=_json({"group": "evil", "version": 1, "changed_keys": []}),
        reason="invalid settings.changed message: group: Input should be 'smtp', 'marketing'"
        " or 'bounce'",
        exact=True,
    ),
    EventCase(
        "events-18",
        "outbound.priority (the autoresponder lane) with objects nested 5,000 deep in a field",
        "dead-lettered: nested too deeply",
        exchange="work",
        routing_key="outbound.priority",
        body=b'{"kind": "autoresponder", "emails": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001,
        reason="invalid outbound.batch message: not JSON we accept: nested too deeply (more"
        " than 200 levels)",
        exact=True,
    ),
    EventCase(
        "events-19",
        "delivery.results whose item_id is 2^63",
        "dead-lettered: the nested field named",
        exchange="events",
        routing_key="delivery.results",
        body=_json({"campaign_id": 1, "results": [{"item_id": BIG, "status": "sent"}]}),
        reason="invalid delivery.results message: results.0.item_id: Input should be less than"
        " or equal to 9223372036854775807",
        exact=True,
    ),
    EventCase(
        "events-20",
        "campaign.cancel whose body is a JSON array, with no content type",
        "dead-lettered: not an object",
        routing_key="campaign.cancel",
        body=b"[1, 2, 3]",
        content_type=None,
        reason="invalid campaign.cancel message: Input should be an object",
        exact=True,
    ),
    EventCase(
        "events-21",
        "outbound.batch with a forged x-mailroom-error header and a NaN",
        "dead-lettered with our reason, not the forged one",
        exchange="work",
        routing_key="outbound.batch",
        body=b"NaN",
        headers={ERROR_HEADER: "all is well"},
        reason="invalid outbound.batch message: Input should be an object",
        exact=True,
    ),
    EventCase(
        "events-22",
        "contacts.subscribed (a batch) with a contact_id 0 among good entries",
        "dead-lettered: the entry named (no item created for the others)",
        exchange="events",
        routing_key="contacts.subscribed",
        body=_json(
            {
                "list_id": 1,
                "subscriptions": [
                    {"contact_id": 1, "event_id": "s1"},
                    {"contact_id": 0, "event_id": "s2"},
                ],
            }
        ),
        reason="invalid contacts.subscribed message: subscriptions.1.contact_id: Input should"
        " be greater than 0",
    ),
    EventCase(
        "events-23",
        "campaign.cancel of schema_version 2.0 (a newer major, from a CRM ahead of Mailroom)",
        "dead-lettered: schema_version named, nothing cancelled",
        routing_key="campaign.cancel",
        body=_json({"campaign_id": 1, "schema_version": "2.0"}),
        reason="invalid campaign.cancel message: schema_version: major version 2 is newer than"
        " this consumer reads (1.x)",
    ),
    EventCase(
        "events-24",
        "campaign.pause of schema_version 1.9 naming an unknown campaign, with a field of 1.9",
        "tolerated: processed, and answered for what it is (an unknown campaign)",
        routing_key="campaign.pause",
        body=_json({"campaign_id": 424242, "schema_version": "1.9", "requested_by": "crm"}),
        reason="unknown campaign 424242",
        exact=True,
    ),
]


@dataclass
class Running:
    topology: Topology
    heard: list[SettingsChanged]


@pytest.fixture
async def running(installation: Installation) -> AsyncIterator[Running]:
    """The services with consumers, in this process, plus a probe of settings.changed."""
    heard: list[SettingsChanged] = []

    def probe(_: Runtime) -> Service:
        async def hear(change: SettingsChanged) -> None:
            heard.append(change)

        return Service("probe", on_settings_changed=[hear])

    settings = installation.settings.model_copy(
        update={"http_port": free_port(), "ops_port": 0, "http_host": "127.0.0.1"}
    )
    process = ServiceProcess(
        settings, {**{n: service_factory(n) for n in CONSUMERS}, "probe": probe}
    )
    await process.start()
    try:
        yield Running(Topology.from_settings(settings), heard)
    finally:
        await process.stop()


def _queue_of(topology: Topology, routing_key: str) -> str:
    if routing_key == "settings.changed":
        return topology.settings_dead_letters.name
    for queue, _, key in topology.bindings():
        if key in (routing_key, routing_key.split(".")[0] + ".*"):
            return f"{queue.name}.dlq"
    raise AssertionError(f"no queue for {routing_key}")


# a well-formed message of the same queue, sent after the hostile one
SECOND_ROUTING_KEY = {
    "campaign": "campaign.pause",
    "items": "items.page",
    "outbound": None,  # the same routing key (batch or priority lane)
    "delivery": "delivery.results",
    "contact": "contact.event",
    "contacts": "contact.event",
    "settings": "settings.changed",
}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_event(case: Case, running: Running) -> None:
    assert isinstance(case, EventCase)
    topology = running.topology
    dlq = _queue_of(topology, case.routing_key)
    second_key = SECOND_ROUTING_KEY[case.routing_key.split(".")[0]] or case.routing_key
    settings_change = SettingsChanged(group="marketing", version=4242, changed_keys=["footer"])
    second = (
        settings_change.model_dump_json().encode() if second_key == "settings.changed" else SENTINEL
    )

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{topology.prefix}.{case.exchange}")
        for body, tag, content_type, key in (
            (case.body, case.id, case.content_type, case.routing_key),
            (second, "second", JSON, second_key),
        ):
            headers: HeadersType = {**case.headers} if tag == case.id else {}
            headers["x-case"] = tag
            message = aio_pika.Message(
                body,
                content_type=content_type,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            assert await exchange.publish(message, routing_key=key, mandatory=True)

        letters: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
        dead_letters = await channel.get_queue(dlq)

        async def answered() -> bool:
            while (letter := await dead_letters.get(fail=False)) is not None:
                await letter.ack()
                letters[str((letter.headers or {}).get("x-case"))] = letter
            second_done = (
                any(c.version == 4242 for c in running.heard)
                if second_key == "settings.changed"
                else "second" in letters
            )
            return case.id in letters and second_done

        await wait_for(answered, 60, f"{case.id} dead-lettered and the next message handled")

    letter = letters[case.id]
    reason = str((letter.headers or {})[ERROR_HEADER])
    if case.exact:
        assert reason == case.reason
    else:
        assert reason.startswith(case.reason), reason
    assert letter.body == case.body, "the message is kept as it came"
    assert set(letters) <= {case.id, "second"}, "nothing else dead-lettered"
