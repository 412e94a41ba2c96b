"""Unknown fields are logged once per set of fields and process, within bounds."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from mailroom_common import intake
from mailroom_common.events import CampaignLaunch, OutboundBatch, event_json, unknown_fields


@pytest.fixture(autouse=True)
def forgotten() -> Iterator[None]:
    saved = set(intake._UNKNOWN_LOGGED)
    intake._UNKNOWN_LOGGED.clear()
    yield
    intake._UNKNOWN_LOGGED.clear()
    intake._UNKNOWN_LOGGED.update(saved)


def _launch(**extra: object) -> CampaignLaunch:
    return CampaignLaunch.model_validate_json(json.dumps({"campaign_id": 1, **extra}))


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]


def test_each_set_of_unknown_fields_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=intake.__name__)
    for _ in range(3):
        intake._log_unknown_fields(_launch(priority=1))
    intake._log_unknown_fields(_launch(priority=1, region="eu"))
    intake._log_unknown_fields(_launch())
    assert _logged(caplog) == [
        "campaign.launch (schema_version 1) has fields this version does not know, ignored:"
        " priority (logged once per process for this set of fields)",
        "campaign.launch (schema_version 1) has fields this version does not know, ignored:"
        " priority, region (logged once per process for this set of fields)",
    ]


def test_a_flood_of_fields_is_logged_within_bounds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=intake.__name__)
    many = {f"f{i:05d}\n" + "x" * 500: i for i in range(5000)}
    intake._log_unknown_fields(_launch(**many))
    [line] = _logged(caplog)
    assert "\n" not in line and "and 4980 more" in line and len(line) < 3000
    for i in range(intake.MAX_UNKNOWN_LOGGED + 50):
        intake._log_unknown_fields(_launch(**{f"g{i}": 1}))
    assert len(intake._UNKNOWN_LOGGED) == intake.MAX_UNKNOWN_LOGGED
    assert all(len(fields) <= intake.MAX_UNKNOWN_SHOWN for _, fields, _ in intake._UNKNOWN_LOGGED)


def test_unknown_fields_are_dropped_once_logged_never_forwarded() -> None:
    batch = OutboundBatch.model_validate_json(
        json.dumps(
            {
                "campaign_id": 1,
                "for_someone_else": "secret-ish",
                "emails": [
                    {
                        "item_id": 1,
                        "recipient": "a@example.com",
                        "envelope_from": "b@example.com",
                        "message": "m",
                        "tracking": {"deep": [1, 2]},
                    }
                ],
            }
        )
    )
    intake._log_unknown_fields(batch)
    assert unknown_fields(batch) == []
    # what the sender does with a temporary failure: the batch again, to a retry tier
    again = batch.model_copy(
        update={"emails": [e.model_copy(update={"attempt": 1}) for e in batch.emails]}
    )
    forwarded = json.loads(event_json(again))
    assert "for_someone_else" not in forwarded and "tracking" not in forwarded["emails"][0]
    assert forwarded["emails"][0]["attempt"] == 1
