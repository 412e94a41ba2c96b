"""Against a relay that answers 421 4.7.0 above a rate, the sender settles near that rate
(the shared rate lowered, then raised back slowly) instead of retrying in a storm."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mailroom_common.adaptive_rate import ACCOUNT_RATE_NAME, AdaptiveRateLimiter

from tests.support.cli import run_mailroom
from tests.support.environment import Installation
from tests.support.scenario import campaign_reaches, launched_campaign, pool_of, status_of
from tests.support.throttling_smtp import ThrottlingSmtpServer

pytestmark = pytest.mark.integration

RELAY_LIMIT = 50  # messages a second the relay takes
CEILING = 100  # the account's messages_per_second: twice what the relay takes
RECIPIENTS = 1000


@pytest.fixture
def throttling_smtp() -> Iterator[ThrottlingSmtpServer]:
    with ThrottlingSmtpServer(RELAY_LIMIT) as server:
        yield server


async def test_the_sender_settles_near_the_relays_rate(
    installation: Installation, throttling_smtp: ThrottlingSmtpServer
) -> None:
    audience, campaign_id, _ = await launched_campaign(
        installation,
        throttling_smtp,
        RECIPIENTS,
        messages_per_second=CEILING,
    )
    status = await campaign_reaches(installation, campaign_id)

    handler = throttling_smtp.handler
    deferrals = handler.deferrals
    state = await AdaptiveRateLimiter(pool_of(installation), ACCOUNT_RATE_NAME).state()
    print(
        f"\n{RECIPIENTS} recipients, relay limit {RELAY_LIMIT}/s, ceiling {CEILING}/s:"
        f" {deferrals} deferrals ({deferrals / RECIPIENTS:.1%}), shared rate now"
        f" {state.rate}/s, {state.throttle_events} throttle events\n"
        f"accepted/deferred each second: {handler.timeline()}"
    )
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": RECIPIENTS}
    recipients = handler.recipients()
    assert set(recipients) == audience.eligible and max(recipients.values()) == 1
    assert 0 < deferrals < 0.15 * RECIPIENTS
    assert state.rate is not None and state.rate < CEILING
    assert state.reason == "421 4.7.0 Try again later"
    # campaign status says it (`mailroom campaign status`, JSON too)
    send_rate = (await status_of(installation, campaign_id))["send_rate"]
    assert send_rate["ceiling_per_second"] == CEILING
    assert send_rate["rate_per_second"] < CEILING
    assert send_rate["reason"] == "lowered: 421 4.7.0 Try again later"
    assert send_rate["throttle_events"] == state.throttle_events >= deferrals
    shown = await run_mailroom(installation.env, "campaign", "status", str(campaign_id))
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("send rate"))
    assert f"of {CEILING}/s, lowered: 421 4.7.0 Try again later (" in line, line
    # a throttled send gave its try back: nobody went through the retry tiers' count
    attempts = await pool_of(installation).fetchval(
        "SELECT max(attempts) FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    assert attempts == 1
