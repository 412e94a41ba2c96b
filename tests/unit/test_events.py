from __future__ import annotations

import json
from typing import ClassVar

import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import (
    REGISTRY,
    CampaignLaunch,
    ContactActivity,
    ContactEvent,
    DeliveryResults,
    Event,
    OutboundBatch,
    event_from_json,
    json_schemas,
    unknown_fields,
)
from mailroom_common.intake import describe_validation_error
from pydantic import ValidationError


def test_launch_event_validates() -> None:
    assert CampaignLaunch.model_validate_json(b'{"campaign_id": 3}').campaign_id == 3
    for bad in (b'{"campaign_id": "x"}', b'{"campaign_id": 0}'):
        with pytest.raises(ValidationError):
            CampaignLaunch.model_validate_json(bad)


def test_unknown_fields_are_kept_aside_at_every_level() -> None:
    launch = CampaignLaunch.model_validate_json(b'{"campaign_id": 3, "priority": "high"}')
    assert launch.campaign_id == 3 and unknown_fields(launch) == ["priority"]
    results = DeliveryResults.model_validate_json(
        b'{"results": [{"item_id": 1, "status": "sent", "opened": false},'
        b' {"item_id": 2, "status": "sent", "opened": true, "x": 1}], "region": "eu"}'
    )
    assert unknown_fields(results) == ["region", "results[].opened", "results[].x"]
    event = ContactEvent.model_validate_json(
        b'{"contact_id": 1, "type": "t", "event_id": "e", "data": {"anything": 1}}'
    )
    assert unknown_fields(event) == []  # free-form data is not unknown


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"campaign_id": 3, "sendAt": "2030-01-01T00:00:00Z"}', "did you mean send_at"),
        (b'{"campaign_id": 3, "Send-At": "2030-01-01T00:00:00Z"}', "did you mean send_at"),
        (b'{"campaign_id": 3, "CampaignID": 4}', "did you mean campaign_id"),
    ],
)
def test_another_spelling_of_a_known_field_is_refused(body: bytes, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        CampaignLaunch.model_validate_json(body)


@pytest.mark.parametrize("version", [1, "1", "1.0", "1.7", "1.123"])
def test_the_same_major_is_read_whatever_its_minor(version: int | str) -> None:
    body = json.dumps({"campaign_id": 3, "schema_version": version})
    assert CampaignLaunch.model_validate_json(body).schema_version == version


@pytest.mark.parametrize("version", [2, "2", "2.0", 0, "0.9", "1.x", "v1", 1.5, "", None])
def test_another_major_or_a_malformed_version_is_refused(version: object) -> None:
    body = json.dumps({"campaign_id": 3, "schema_version": version})
    with pytest.raises(ValidationError) as refused:
        CampaignLaunch.model_validate_json(body)
    assert all(e["loc"][0] == "schema_version" for e in refused.value.errors())


def test_every_model_with_a_routing_key_is_registered() -> None:
    assert REGISTRY["contact.activity"] is ContactActivity
    assert set(json_schemas()) == set(REGISTRY)
    with pytest.raises(TypeError, match="already"):

        class Again(Event):
            routing_key: ClassVar[str] = "campaign.launch"


def test_a_batch_carries_many_recipients_never_zero() -> None:
    with pytest.raises(ValidationError):
        OutboundBatch(emails=[])


def test_every_message_has_a_schema() -> None:
    assert {"campaign.launch", "items.page", "outbound.batch", "delivery.results"} <= set(
        json_schemas()
    )


def test_retry_tiers_run_out() -> None:
    topology = Topology(prefix="p", delivery_limit=3, retry_delays_ms=(1000, 5000))
    assert [topology.retry_tier(a) for a in range(3)] == [1000, 5000, None]
    queue = topology.outbound_batches
    # the delivery limit is a policy (broker_policy), never an argument that cannot change
    assert queue.arguments is not None and "x-delivery-limit" not in queue.arguments
    assert queue.arguments["x-dead-letter-routing-key"] == queue.name


def test_a_nul_is_refused_in_a_field_not_in_a_field_ignored() -> None:
    with pytest.raises(ValidationError, match="type holds a NUL character"):
        ContactEvent.model_validate_json(b'{"contact_id": 1, "type": "a\\u0000b", "event_id": "e"}')
    event = ContactEvent.model_validate_json(
        b'{"contact_id": 1, "type": "t", "event_id": "e", "crm_note": "a\\u0000b"}'
    )
    assert unknown_fields(event) == ["crm_note"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"contact_id": 1, "type": "t", "event_id": "e", "data": {"k": ["x", "a\\u0000"]}}',
        b'{"contact_id": 1, "type": "t", "event_id": "e", "data": {"k\\u0000": 1}}',
        b'{"results": [{"item_id": 1, "status": "sent", "smtp_reply": "250 \\u0000"}]}',
    ],
)
def test_a_message_read_from_its_body_refuses_a_nul_wherever_it_is(body: bytes) -> None:
    model = DeliveryResults if b"results" in body else ContactEvent
    with pytest.raises(ValidationError, match="holds a NUL character"):
        event_from_json(model, body)


def test_a_body_without_a_nul_escape_is_read_as_it_is() -> None:
    # an escaped backslash before "u0000" is text, not a NUL: read, not refused
    event = event_from_json(
        ContactEvent, b'{"contact_id": 1, "type": "\\\\u0000", "event_id": "e", "data": {}}'
    )
    assert event.type == "\\u0000"
    batch = event_from_json(
        OutboundBatch,
        b'{"emails": [{"item_id": 1, "recipient": "a@x", "envelope_from": "b@x",'
        b' "message": "Subject: s\\r\\n\\r\\nhi\\r\\n"}]}',
    )
    assert batch.emails[0].message == "Subject: s\r\n\r\nhi\r\n"


@pytest.mark.parametrize(
    "version",
    ["1.99999999999999999999", "01", "-1", "1.a", "1.", " 1", "1\n", True, 1.0, -1, 10**30],
)
def test_a_version_is_read_as_written_or_refused_with_one_reason(version: object) -> None:
    body = json.dumps({"campaign_id": 3, "schema_version": version})
    with pytest.raises(ValidationError) as refused:
        CampaignLaunch.model_validate_json(body)
    [error] = refused.value.errors()
    assert error["loc"] == ("schema_version",) and "not a version" in error["msg"]


def test_a_huge_version_is_refused_without_being_echoed() -> None:
    body = json.dumps({"campaign_id": 3, "schema_version": "x" * 1_000_000})
    with pytest.raises(ValidationError) as refused:
        CampaignLaunch.model_validate_json(body)
    assert len(describe_validation_error(refused.value)) < 200
