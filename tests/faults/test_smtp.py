"""The fault matrix, the SMTP server: busy (421) for 30 s, greylisting (451) a share of the
recipients and rejecting (550) some, connections reset in the middle of DATA, and the server
gone for 60 s, each in the middle of a 5,000-recipient campaign.

A temporary failure of the server is never the recipient's: everyone it did not refuse for
good gets the message, once (a second copy only where the server took a message and the
connection broke before its reply came back).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from functools import partial

import pytest
from mailroom_common.runtime_settings import SettingsStore

from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.environment import Installation
from tests.support.fault_bounces import (
    bounce_mailbox,
    bounce_some,
    restart_dovecot,
    restart_mid_fetch,
    restart_service,
)
from tests.support.fault_campaign import CAMPAIGN_SERVICES, RECIPIENTS, FaultCampaign, prepared_run
from tests.support.faulty_smtp import FaultySmtpServer

MID_CAMPAIGN = RECIPIENTS * 3 // 10
BOUNCES = 300


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


async def test_smtp_answers_421_for_30_seconds(
    install: Installation, smtp: FaultySmtpServer
) -> None:
    run = await prepared_run(install, smtp)
    await run.launch()
    await run.received(MID_CAMPAIGN)

    in_flight = await run.in_flight()
    busy_until = smtp.busy_for(30)
    at_fault = smtp.handler.count()

    figures = await run.figures("smtp-421-for-30s", in_flight=len(in_flight), fault_over=busy_until)
    figures.extra["busy_replies"] = smtp.handler.counts.busy_replies
    run.report(figures)
    assert at_fault < RECIPIENTS and smtp.handler.counts.busy_replies > 0, "the 421s hit nothing"
    figures.check(zero_duplicates=False)


async def test_smtp_greylists_a_share_and_rejects_some(
    install: Installation, smtp: FaultySmtpServer
) -> None:
    """451 twice for every tenth recipient (then accepted), 550 for fifty others."""
    run = await prepared_run(install, smtp)
    everyone = sorted(run.audience.eligible)
    greylisted = everyone[::10]
    rejected = everyone[5::100]
    smtp.faults.greylist.update(dict.fromkeys(greylisted, 2))
    smtp.faults.reject.update(rejected)
    await run.launch()

    figures = await run.figures(
        "smtp-451-share-550-some",
        in_flight=0,
        fault_over=run.launched,
        refused_for_good=rejected,
        greylisted=len(greylisted),
        rejected=len(rejected),
    )
    run.report(figures)
    figures.check(zero_duplicates=True)
    failed = await run.pool.fetch(
        "SELECT lower(email) AS email, smtp_code, smtp_reply FROM campaign_items"
        " WHERE campaign_id = $1 AND status = 'failed'",
        run.campaign_id,
    )
    assert {r["email"] for r in failed} == set(rejected)
    assert all(r["smtp_code"] == 550 and "5.1.1" in r["smtp_reply"] for r in failed)
    assert not any(smtp.faults.greylist.values()), "every greylisted recipient came back"
    tried_again = await run.item_count("attempts > 1")
    assert tried_again >= len(greylisted), f"only {tried_again} items tried more than once"


async def test_smtp_connections_reset_in_the_middle_of_data(
    install: Installation, smtp: FaultySmtpServer
) -> None:
    """Twenty connections reset while the message comes in (the server keeps nothing), and
    twenty after the server took the message but before its reply (the server keeps it:
    the sender cannot know, so these may arrive twice)."""
    run = await prepared_run(install, smtp)
    await run.launch()
    await run.received(MID_CAMPAIGN)

    smtp.faults.reset_in_data = 20
    smtp.faults.reset_after_data = 20

    async def all_cut() -> bool:
        return smtp.faults.reset_in_data == 0 and smtp.faults.reset_after_data == 0

    await run.until(all_cut, "forty connections cut")
    fault_over = time.monotonic()
    cut = smtp.handler.counts

    figures = await run.figures(
        "smtp-reset-mid-data",
        in_flight=cut.reset_in_data + cut.reset_after_data,
        fault_over=fault_over,
        reset_before_kept=cut.reset_in_data,
        reset_after_kept=cut.reset_after_data,
    )
    run.report(figures)
    figures.check(zero_duplicates=False)
    assert figures.duplicates <= cut.reset_after_data, "only a message the server kept may repeat"


async def test_smtp_server_gone_for_60_seconds_while_bounces_are_fetched_and_imap_restarts(
    install: Installation, smtp: FaultySmtpServer, dovecot: Dovecot
) -> None:
    """Two cases on one campaign, to spend the outage once: while the SMTP server is gone,
    bounces of messages delivered before arrive in the bounce mailbox, and Dovecot is
    restarted (killed, then started) while the bounce processor is fetching them."""
    run = FaultCampaign(install, smtp)
    await run.prepare()
    await SettingsStore(run.pool, install.settings.settings_key).save(
        bounce_mailbox(dovecot), changed_by="tests"
    )
    await run.start(*CAMPAIGN_SERVICES, "bounce_processor")
    await run.launch()
    await run.received(MID_CAMPAIGN)

    in_flight = await run.in_flight()
    with smtp.gone():
        gone = time.monotonic()
        delivered_before = smtp.handler.count()
        # three rounds of bounces, each with its fault mid-fetch: Dovecot restarted, then the
        # bounce processor killed, then stopped, each started again
        earlier: frozenset[str] = frozenset()
        mailbox_figures = []
        faults = [
            ("imap-restart-mid-fetch", partial(restart_dovecot, dovecot)),
            ("sigkill-bounce_processor", partial(restart_service, run, signal.SIGKILL)),
            ("sigterm-bounce_processor", partial(restart_service, run, signal.SIGTERM)),
        ]
        for case, fault in faults:
            bounced = await bounce_some(run, dovecot, BOUNCES)
            restart = await restart_mid_fetch(run, dovecot, BOUNCES, fault, len(earlier))
            mailbox_figures.append(await restart.figures(run, case, bounced, earlier))
            earlier |= bounced
        await asyncio.sleep(max(0.0, gone + 60 - time.monotonic()))
    back = time.monotonic()

    figures = await run.figures(
        "smtp-gone-60s",
        in_flight=len(in_flight),
        fault_over=back,
        outage_s=round(back - gone, 1),
        delivered_before=delivered_before,
    )
    run.report(figures)
    for round_figures in mailbox_figures:
        print(round_figures.line())
    assert delivered_before < RECIPIENTS, "the campaign was over before the server went away"
    figures.check(zero_duplicates=False)
    for round_figures in mailbox_figures:
        round_figures.check()
