"""The fault matrix, shared servers: RabbitMQ and PostgreSQL restarted in the middle of a
5,000-recipient campaign. Results the sender knows are never thrown away, so neither may
duplicate anything or fail anyone.
"""

from __future__ import annotations

from tests.support.environment import Installation
from tests.support.fault_campaign import RECIPIENTS, prepared_run
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.server_restarts import restart_postgresql, restart_rabbitmq

MID_CAMPAIGN = RECIPIENTS * 3 // 10


async def test_rabbitmq_restarted_mid_campaign(
    install: Installation, smtp: FaultySmtpServer
) -> None:
    run = await prepared_run(install, smtp)
    await run.launch()
    await run.received(MID_CAMPAIGN)

    in_flight = await run.in_flight()
    outage = await restart_rabbitmq(down_seconds=5)
    at_restart = smtp.handler.count()

    figures = await run.figures(
        "rabbitmq-restart",
        in_flight=len(in_flight),
        fault_over=outage.ended,
        outage_s=round(outage.seconds, 1),
    )
    run.report(figures)
    assert at_restart < RECIPIENTS, "the campaign was over before the broker came back"
    figures.check(zero_duplicates=True)


async def test_postgresql_restarted_mid_campaign(
    install: Installation, smtp: FaultySmtpServer
) -> None:
    run = await prepared_run(install, smtp)
    await run.launch()
    await run.received(MID_CAMPAIGN)

    in_flight = await run.in_flight()
    outage = await restart_postgresql()
    at_restart = smtp.handler.count()

    figures = await run.figures(
        "postgresql-restart",
        in_flight=len(in_flight),
        fault_over=outage.ended,
        outage_s=round(outage.seconds, 1),
    )
    run.report(figures)
    assert at_restart < RECIPIENTS, "the campaign was over before the database came back"
    figures.check(zero_duplicates=True)
