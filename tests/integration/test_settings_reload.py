"""Services follow settings changes without a restart."""

from __future__ import annotations

import pytest
from mailroom_common.runtime_settings import MarketingSettings, SmtpAccount

from tests.support.environment import Installation
from tests.support.scenario import (
    campaign_reaches,
    change_settings,
    launched_campaign,
    received_count,
    smtp_received,
)
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

OLD_TEXT = "OLD-FOOTER unsubscribe: {{ unsubscribe_url }} manage: {{ manage_url }}"
OLD_HTML = (
    '<p>OLD-FOOTER <a href="{{ unsubscribe_url }}">u</a> <a href="{{ manage_url }}">m</a></p>'
)
NEW_TEXT = "NEW-FOOTER unsubscribe: {{ unsubscribe_url }} manage: {{ manage_url }}"
NEW_HTML = (
    '<p>NEW-FOOTER <a href="{{ unsubscribe_url }}">u</a> <a href="{{ manage_url }}">m</a></p>'
)


async def test_a_footer_changed_mid_campaign_applies_to_what_is_rendered_afterwards(
    smtp_server: SmtpServer,
) -> None:
    installation = Installation(items_page_size=50)
    await installation.setup()
    try:
        await change_settings(
            installation, MarketingSettings(text_footer=OLD_TEXT, html_footer=OLD_HTML)
        )
        _, campaign_id, _ = await launched_campaign(installation, smtp_server, 5000)
        await smtp_received(smtp_server, 1)
        await change_settings(
            installation, MarketingSettings(text_footer=NEW_TEXT, html_footer=NEW_HTML)
        )
        status = await campaign_reaches(installation, campaign_id, limit=300)
    finally:
        await installation.teardown()

    assert status["counts"] == {"sent": 5000}
    footers: dict[str, int] = {"OLD-FOOTER": 0, "NEW-FOOTER": 0}
    for received in smtp_server.handler.received:
        text, html = received.part("plain"), received.part("html")
        kinds = {k for k in footers if k in text} | {k for k in footers if k in html}
        assert len(kinds) == 1, f"a message mixes footers: {kinds}"
        assert text.count("-FOOTER") == 1 and html.count("-FOOTER") == 1
        footers[kinds.pop()] += 1
    print(f"\nfooters: {footers}")
    assert footers["OLD-FOOTER"] > 0, "the first pages were rendered before the change"
    assert footers["NEW-FOOTER"] > 0, "pages rendered after the change carry the new footer"


async def test_the_smtp_server_changed_mid_campaign_takes_the_rest(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    with SmtpServer() as second_server:
        audience, campaign_id, _ = await launched_campaign(
            installation, smtp_server, 2000, messages_per_second=300
        )
        await smtp_received(smtp_server, 500)
        await change_settings(
            installation,
            SmtpAccount(
                host="127.0.0.1",
                port=second_server.port,
                security="none",
                pool_size=4,
                messages_per_second=300,
            ),
        )
        await smtp_received(second_server, 1, limit=30)
        first_after_switch = received_count(smtp_server)
        status = await campaign_reaches(installation, campaign_id)

        first, second = smtp_server.handler.recipients(), second_server.handler.recipients()
    print(f"\nfirst server: {sum(first.values())}, second server: {sum(second.values())}")
    assert status["counts"] == {"sent": 2000}
    assert set(first) | set(second) == audience.eligible
    assert not set(first) & set(second), "nothing sent twice across the switch"
    assert max((first + second).values()) == 1
    # chunks started after the switch go to the new server; a chunk already sending when it
    # came finishes on the old connections (each batch in flight has at most one)
    in_flight = installation.settings.prefetch * 4 * installation.settings.chunk_per_connection
    late = received_count(smtp_server) - first_after_switch
    assert late <= in_flight, f"the old server got {late} after the switch"
    assert sum(second.values()) > 0
