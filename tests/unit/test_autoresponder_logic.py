from __future__ import annotations

import pytest
from mailroom_common.broker import PRIORITY_ROUTING_KEY, Topology
from mailroom_common.events import AUTORESPONDER_TRIGGERS, ContactEvent, ContactSubscribed
from pydantic import ValidationError

from mailroom.autoresponders import AutoresponderProblem, parse_delay


def test_delays_read_with_units() -> None:
    assert [parse_delay(t) for t in ("0", "90", "90s", "15m", "2h", "3d")] == [
        0,
        90,
        90,
        900,
        7200,
        259200,
    ]
    for bad in ("-1", "soon", "400d"):
        with pytest.raises(AutoresponderProblem):
            parse_delay(bad)


def test_trigger_events_validate() -> None:
    assert set(AUTORESPONDER_TRIGGERS) == {
        "contact.subscribed",
        "contacts.subscribed",
        "contact.event",
    }
    event = ContactEvent.model_validate_json(
        b'{"contact_id": 4, "type": "signup", "event_id": "e1", "data": {"plan": "pro"}}'
    )
    assert event.data == {"plan": "pro"}
    for bad in (
        b'{"contact_id": 4, "list_id": 1}',
        b'{"contact_id": 4, "list_id": 1, "event_id": ""}',
    ):
        with pytest.raises(ValidationError):
            ContactSubscribed.model_validate_json(bad)


def test_priority_lane_retries_come_back_to_it() -> None:
    topology = Topology(prefix="p", delivery_limit=3, retry_delays_ms=(1000, 5000))
    bindings = {(q.name, key) for q, _, key in topology.bindings()}
    assert ("p.outbound_sender.priority", PRIORITY_ROUTING_KEY) in bindings
    retry = topology.retry_queue(1000, priority=True)
    assert retry.name == "p.outbound.priority-retry.1000ms"
    assert retry.routing_key == topology.retry_routing_key(1000, priority=True)
    assert retry.arguments is not None
    assert retry.arguments["x-dead-letter-routing-key"] == PRIORITY_ROUTING_KEY
    normal = topology.retry_queue(1000)
    assert normal.arguments is not None
    assert normal.arguments["x-dead-letter-routing-key"] == "outbound.batch"
    assert {retry.name, normal.name} <= set(topology.all_queue_names())
