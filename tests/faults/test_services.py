"""The fault matrix, services: each campaign service killed (SIGKILL) or stopped (SIGTERM) in
the middle of its work on a 5,000-recipient campaign, then started again.

A SIGKILL may duplicate only what was in flight (claimed, handed to SMTP, result not yet
recorded); a SIGTERM drains and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.support.environment import Installation
from tests.support.fault_campaign import (
    CAMPAIGN_SERVICES,
    RECIPIENTS,
    FaultCampaign,
    prepared_run,
)
from tests.support.faulty_smtp import FaultySmtpServer

SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}
MID_CAMPAIGN = RECIPIENTS * 3 // 10


async def at_work(run: FaultCampaign, service: str) -> None:
    """Wait for the moment `service` is in the middle of its part of the campaign."""
    if service == "item_generator":

        async def generating() -> bool:
            return await run.handed_over() >= RECIPIENTS // 10

        await run.until(generating, "generation under way")
    elif service == "message_processor":

        async def rendering() -> bool:
            return await run.item_count("status <> 'pending'") >= RECIPIENTS // 10

        await run.until(rendering, "rendering under way")
    else:
        await run.received(MID_CAMPAIGN)
        if service == "outbound_sender":
            # while chunks are being sent: the server slows down for a moment, so the stop
            # comes with messages in flight (handed to SMTP, result not yet recorded)
            run.smtp.faults.data_delay = 0.5

            async def sending() -> bool:
                return bool(await run.in_flight())

            await run.until(sending, "items being sent")
            await asyncio.sleep(0.2)


async def still_at_work(run: FaultCampaign, service: str) -> bool:
    """Whether the fault came before `service` had finished its part."""
    if service == "item_generator":
        return await run.handed_over() < RECIPIENTS
    if service == "message_processor":
        # not yet generated, or generated and not yet rendered
        return await run.item_count("status <> 'pending'") < RECIPIENTS
    return run.smtp.handler.count() < RECIPIENTS


@pytest.mark.parametrize("service", CAMPAIGN_SERVICES)
@pytest.mark.parametrize("how", list(SIGNALS))
async def test_service_stopped_mid_campaign_then_started_again(
    installations: Callable[..., Awaitable[Installation]],
    smtp: FaultySmtpServer,
    how: str,
    service: str,
) -> None:
    # small pages, so that generation and rendering are still going when the fault comes
    page_size = 25 if service in ("item_generator", "message_processor") else 250
    install = await installations(items_page_size=page_size)
    run = await prepared_run(install, smtp)
    await run.launch()

    await at_work(run, service)

    def server_back_to_its_pace() -> None:  # what is in flight finishes at the usual pace
        run.smtp.faults.data_delay = 0

    exit_code = await run.stop(service, SIGNALS[how], server_back_to_its_pace)
    mid_work = await still_at_work(run, service)
    in_flight = await run.in_flight()
    fault_over = time.monotonic()
    await run.start_again(service)

    figures = await run.figures(
        f"{how}-{service}", in_flight=len(in_flight), fault_over=fault_over, exit_code=exit_code
    )
    run.report(figures)
    assert mid_work, f"the {how} came after {service} had done its part: not a mid-campaign fault"
    if how == "sigterm":
        assert exit_code == 0, f"{service} did not stop cleanly on SIGTERM\n{run.log_digest()}"
        if service == "outbound_sender":  # (the others stop while the sender goes on)
            assert not in_flight, f"the sender stopped with {len(in_flight)} items half-sent"
    figures.check(zero_duplicates=how == "sigterm")
    # a second copy only for a message handed to SMTP and not recorded at the kill
    duplicated = {a for a, n in run.smtp.handler.recipients().items() if n > 1}
    not_in_flight = sorted(duplicated - in_flight)
    assert not not_in_flight, f"duplicated but not in flight at the kill: {not_in_flight}"
