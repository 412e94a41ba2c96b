from __future__ import annotations

import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import CampaignLaunch, OutboundBatch, json_schemas
from pydantic import ValidationError


def test_launch_event_validates() -> None:
    assert CampaignLaunch.model_validate_json(b'{"campaign_id": 3}').campaign_id == 3
    for bad in (b'{"campaign_id": "x"}', b'{"campaign_id": 0}', b'{"campaign_id": 1, "extra": 1}'):
        with pytest.raises(ValidationError):
            CampaignLaunch.model_validate_json(bad)


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
