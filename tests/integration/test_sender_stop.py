"""SIGTERM of a sender that is in the middle of a batch to a slow server: it stops at the
next chunk and hands the rest of the batch back, so the drain ends within the graceful
timeout, nothing is left `sending` and nobody gets a second copy after the restart."""

from __future__ import annotations

import pytest
from mailroom_common.events import CampaignLaunch

from mailroom.campaigns import send_command
from tests.support.environment import Installation, wait_for
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.scenario import campaign_reaches
from tests.support.seed import make_audience, make_campaign, use_smtp_server

pytestmark = pytest.mark.integration


async def test_a_stopping_sender_hands_back_the_rest_of_its_batch() -> None:
    install = Installation(graceful_timeout_seconds=5, batch_size=100)
    pool = await install.setup()
    smtp = FaultySmtpServer()
    smtp.start()
    try:
        audience = await make_audience(pool, 300)
        await use_smtp_server(pool, smtp.port, pool_size=1)
        smtp.faults.data_delay = 0.1  # a batch of 100 takes 10 s, twice the graceful timeout
        campaign_id = await make_campaign(pool, audience)
        install.start_services("item_generator", "message_processor", "completion")
        sender = install.start_services("outbound_sender", log_name="sender")
        await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))

        async def some_delivered() -> bool:
            return sum(smtp.handler.recipients().values()) >= 12

        await wait_for(some_delivered, 60, "the first emails")
        assert Installation.terminate(sender) == 0
        sending = await pool.fetchval(
            "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND status = 'sending'",
            campaign_id,
        )
        assert sending == 0, "a clean stop leaves nothing in flight"
        assert "handed back to the queue" in install.log_text()

        smtp.faults.data_delay = 0.0
        install.start_services("outbound_sender", log_name="sender-again")
        status = await campaign_reaches(install, campaign_id)
        assert status["status"] == "completed"
        received = smtp.handler.recipients()
        assert set(received) == audience.eligible
        duplicates = sum(n - 1 for n in received.values())
        print(f"sender stopped mid-batch: {len(received)} recipients, {duplicates} duplicates")
        assert duplicates == 0
    finally:
        smtp.stop()
        await install.teardown()
