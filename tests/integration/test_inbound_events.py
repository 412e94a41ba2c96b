"""Every message type Mailroom consumes from outside (commands and events), on the running
services: one with a field it does not know (and a newer minor schema_version) is processed,
the field logged; one with a field of the wrong type is dead-lettered with that field named;
one of a newer major is dead-lettered naming schema_version."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import REGISTRY

from tests.support.autoresponders import make_autoresponder, make_contact, make_list
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration


@dataclass
class World:
    installation: Installation
    metrics: str  # the services' /metrics
    contact_id: int
    list_id: int
    launch_id: int  # a draft the launch case launches
    cancel_id: int  # a draft the cancel case cancels
    other_id: int  # a draft for pause and resume (nothing to do: processed all the same)
    draft_id: int  # a draft the update case renames


Body = Callable[[World], dict[str, Any]]

# routing key -> (a valid body, a field given the wrong type: its path in the reason, value)
CASES: dict[str, tuple[Body, str, Any]] = {
    "campaign.create": (
        lambda w: {
            "name": "By the CRM",
            "subject": "Hello",
            "from_email": "news@mailroom.test",
            "html_template": "<p>Hi {{ contact.first_name }}</p>",
            "list_ids": [w.list_id],
        },
        "subject",
        {"not": "a subject"},
    ),
    "campaign.update": (
        lambda w: {"campaign_id": w.draft_id, "name": "Renamed by the CRM"},
        "name",
        ["not", "a", "name"],
    ),
    "campaign.launch": (lambda w: {"campaign_id": w.launch_id}, "campaign_id", "soon"),
    "campaign.pause": (lambda w: {"campaign_id": w.other_id}, "campaign_id", [1]),
    "campaign.resume": (lambda w: {"campaign_id": w.other_id}, "campaign_id", {"id": 1}),
    "campaign.cancel": (lambda w: {"campaign_id": w.cancel_id}, "campaign_id", 1.5),
    "contact.subscribed": (
        lambda w: {"contact_id": w.contact_id, "list_id": w.list_id, "event_id": "s-1"},
        "list_id",
        "newsletter",
    ),
    "contacts.subscribed": (
        lambda w: {
            "list_id": w.list_id,
            "subscriptions": [{"contact_id": w.contact_id, "event_id": "s-2", "source": "crm"}],
        },
        "subscriptions.0.contact_id",
        "ann",
    ),
    "contact.event": (
        lambda w: {"contact_id": w.contact_id, "type": "signup", "event_id": "e-1"},
        "data",
        ["not", "an", "object"],
    ),
    "delivery.results": (
        lambda w: {"campaign_id": w.other_id, "results": []},
        "results",
        "none",
    ),
    "campaign.generated": (
        lambda w: {"campaign_id": w.other_id, "item_count": 0},
        "item_count",
        "zero",
    ),
    "settings.changed": (
        lambda w: {"group": "marketing", "version": 1, "changed_keys": []},
        "version",
        "latest",
    ),
    "job.run": (lambda w: {"job": "mark-campaigns-completed"}, "job", 42),
    "contact.upserted": (
        lambda w: {"contacts": [{"crm_id": "crm-1", "email": "bea@example.test"}]},
        "contacts.0.crm_id",
        ["crm-1"],
    ),
    "contact.erased": (lambda w: {"crm_ids": ["crm-gone"]}, "crm_ids", "crm-gone"),
}


def _inbound_routing_keys() -> set[str]:
    """The registered messages of the commands and events exchanges some queue receives."""
    topology = Topology(prefix="p", delivery_limit=0, retry_delays_ms=())
    bound = [(exchange.name.split(".")[-1], key) for _, exchange, key in topology.bindings()]
    bound += [("events", "settings.changed"), ("events", "job.run")]
    return {
        routing_key
        for routing_key, model in REGISTRY.items()
        if model.exchange != "work"
        and any(
            exchange == model.exchange
            and re.fullmatch(re.escape(key).replace(r"\*", r"[^.]+"), routing_key)
            for exchange, key in bound
        )
    }


def test_every_inbound_message_type_has_a_case() -> None:
    assert _inbound_routing_keys() == set(CASES), "add a case for each new inbound message"


def _queue_of(topology: Topology, routing_key: str) -> str:
    """The queue name (or, for the per-process listeners, its prefix) that takes the key."""
    if routing_key == "settings.changed":
        return f"{topology.prefix}.settings-changed."
    if routing_key == "job.run":
        return f"{topology.prefix}.job-run."
    exchange = f"{topology.prefix}.{REGISTRY[routing_key].exchange}"
    for queue, bound_to, key in topology.bindings():
        if bound_to.name == exchange and re.fullmatch(
            re.escape(key).replace(r"\*", r"[^.]+"), routing_key
        ):
            return queue.name
    raise AssertionError(routing_key)


def _dead_letter_queue(topology: Topology, routing_key: str) -> str:
    if routing_key == "settings.changed":
        return topology.settings_dead_letters.name
    if routing_key == "job.run":
        return topology.job_run_dead_letters.name
    return f"{_queue_of(topology, routing_key)}.dlq"


def _handled(metrics: str, queue: str, outcome: str) -> float:
    total = 0.0
    pattern = re.compile(
        r'^mailroom_broker_messages_total\{outcome="(\w+)",queue="([^"]+)"\} ([0-9.e+]+)$'
    )
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match and match.group(1) == outcome and match.group(2).startswith(queue):
            total += float(match.group(3))
    return total


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    installation = Installation()
    pool = await installation.setup()
    try:
        with SmtpServer() as smtp:
            audience = await make_audience(pool, 3)
            await use_smtp_server(pool, smtp.port)
            launch_id = await make_campaign(pool, audience, "launched by the case")
            cancel_id = await make_campaign(pool, audience, "cancelled by the case")
            other_id = await make_campaign(pool, audience, "paused and resumed")
            draft_id = await make_campaign(pool, audience, "updated by the case")
            list_id = await make_list(pool, "welcome")
            contact_id = await make_contact(pool, "ann@example.test", list_id)
            # autoresponders far in the future: a trigger makes an item, nothing is sent
            await make_autoresponder(
                installation, "Welcome", list_name="welcome", delay_seconds=86_400
            )
            await make_autoresponder(
                installation,
                "Signed up",
                trigger="contact.event",
                event_type="signup",
                delay_seconds=86_400,
            )
            process = installation.start_services(log_name="inbound")
            yield World(
                installation,
                installation.metrics_url(process),
                contact_id,
                list_id,
                launch_id,
                cancel_id,
                other_id,
                draft_id,
            )
    finally:
        await installation.teardown()


async def _publish(world: World, routing_key: str, body: dict[str, Any]) -> None:
    settings = world.installation.settings
    exchange = REGISTRY[routing_key].exchange
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_exchange(f"{settings.queue_prefix}.{exchange}")
        await target.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def _outcome(world: World, routing_key: str, outcome: str, before: float) -> None:
    queue = _queue_of(Topology.from_settings(world.installation.settings), routing_key)

    async def counted() -> bool:
        return _handled(await _metrics(world), queue, outcome) > before

    await wait_for(counted, 30, f"a {routing_key} message {outcome}")


async def _count(world: World, routing_key: str, outcome: str) -> float:
    queue = _queue_of(Topology.from_settings(world.installation.settings), routing_key)
    return _handled(await _metrics(world), queue, outcome)


async def _metrics(world: World) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(world.metrics)).text


async def _last_dead_letter(world: World, routing_key: str) -> str:
    name = _dead_letter_queue(Topology.from_settings(world.installation.settings), routing_key)
    connection = await aio_pika.connect(RABBITMQ_URL)
    reasons: list[str] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name)
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            reasons.append(str((message.headers or {}).get("x-mailroom-error")))
    assert reasons, f"nothing in {name}"
    return reasons[-1]


@pytest.mark.parametrize("routing_key", sorted(CASES))
async def test_an_unknown_field_and_a_newer_minor_are_processed(
    world: World, routing_key: str
) -> None:
    make_body, _field, _value = CASES[routing_key]
    body = {**make_body(world), "schema_version": "1.9", f"crm_{_field_name(routing_key)}": 1}
    ok, dead = (
        await _count(world, routing_key, "ok"),
        await _count(world, routing_key, "dead_lettered"),
    )
    await _publish(world, routing_key, body)
    await _outcome(world, routing_key, "ok", ok)
    assert await _count(world, routing_key, "dead_lettered") == dead
    logged = (
        f"{routing_key} (schema_version 1.9) has fields this version does not know, ignored:"
        f" crm_{_field_name(routing_key)}"
    )
    assert logged in world.installation.log_text()
    pool = world.installation.pool
    assert pool is not None
    if routing_key == "campaign.launch":
        status = await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", world.launch_id)
        assert status != "draft"
    if routing_key == "campaign.update":
        name = await pool.fetchval("SELECT name FROM campaigns WHERE id = $1", world.draft_id)
        assert name == "Renamed by the CRM"
    if routing_key == "campaign.create":
        made = await pool.fetchval("SELECT count(*) FROM campaigns WHERE name = 'By the CRM'")
        assert made >= 1
    if routing_key == "campaign.cancel":
        status = await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", world.cancel_id)
        assert status == "cancelled"
    if routing_key in ("contact.subscribed", "contacts.subscribed", "contact.event"):
        event_id = {"contact.subscribed": "s-1", "contacts.subscribed": "s-2"}.get(
            routing_key, "e-1"
        )
        made = await pool.fetchval(
            "SELECT count(*) FROM autoresponder_items WHERE event_id LIKE '%' || $1", event_id
        )
        assert made == 1


def _field_name(routing_key: str) -> str:
    return routing_key.replace(".", "_")


@pytest.mark.parametrize("routing_key", sorted(CASES))
async def test_a_wrong_type_is_dead_lettered_naming_the_field(
    world: World, routing_key: str
) -> None:
    make_body, field, value = CASES[routing_key]
    body = make_body(world)
    where: Any = body
    *parents, last = field.split(".")
    for part in parents:
        where = where[int(part)] if part.isdigit() else where[part]
    where[last] = value
    dead = await _count(world, routing_key, "dead_lettered")
    await _publish(world, routing_key, body)
    await _outcome(world, routing_key, "dead_lettered", dead)
    reason = await _last_dead_letter(world, routing_key)
    assert reason.startswith(f"invalid {routing_key} message: {field}: "), reason


@pytest.mark.parametrize("routing_key", sorted(CASES))
async def test_a_newer_major_is_dead_lettered_naming_schema_version(
    world: World, routing_key: str
) -> None:
    make_body, _field, _value = CASES[routing_key]
    dead = await _count(world, routing_key, "dead_lettered")
    await _publish(world, routing_key, {**make_body(world), "schema_version": "2.0"})
    await _outcome(world, routing_key, "dead_lettered", dead)
    reason = await _last_dead_letter(world, routing_key)
    assert reason.startswith(f"invalid {routing_key} message: schema_version: major version 2")
