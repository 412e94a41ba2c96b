"""The fault matrix, a settings change mid-campaign: through the config service's admin API
(a process of its own), the SMTP account is switched to a second server and the footers
are changed while a 5,000-recipient campaign is sending.

Every recipient gets one message, from one server or the other; every message carries one
footer, whole; the messages rendered after the change carry the new one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
from mailroom_common.runtime_settings import MarketingSettings

from tests.support.environment import Installation
from tests.support.fault_campaign import CAMPAIGN_SERVICES, RECIPIENTS, FaultCampaign
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.scenario import change_settings

MID_CAMPAIGN = RECIPIENTS * 3 // 10
FOOTER = "{kind}-FOOTER unsubscribe: {{{{ unsubscribe_url }}}} manage: {{{{ manage_url }}}}"
HTML_FOOTER = (
    '<p>{kind}-FOOTER <a href="{{{{ unsubscribe_url }}}}">u</a>'
    ' <a href="{{{{ manage_url }}}}">m</a></p>'
)


def footers(kind: str) -> dict[str, str]:
    return {"text_footer": FOOTER.format(kind=kind), "html_footer": HTML_FOOTER.format(kind=kind)}


def footer_kinds(server: FaultySmtpServer) -> dict[str, int]:
    found = {"OLD": 0, "NEW": 0}
    with server.handler.lock:
        received = list(server.handler.received)
    for message in received:
        text, html = message.part("plain"), message.part("html")
        kinds = {k for k in found if f"{k}-FOOTER" in text} | {
            k for k in found if f"{k}-FOOTER" in html
        }
        assert len(kinds) == 1, f"a message carries {kinds or 'no'} footer(s)"
        assert text.count("-FOOTER") == 1 and html.count("-FOOTER") == 1
        found[kinds.pop()] += 1
    return found


async def test_smtp_account_and_footers_changed_mid_campaign(
    installations: Callable[..., Awaitable[Installation]], smtp: FaultySmtpServer
) -> None:
    # small pages, so that rendering is still going when the footers change
    install = await installations(items_page_size=25)
    with FaultySmtpServer() as second:
        run = FaultCampaign(install, smtp)
        await run.prepare()
        await change_settings(install, MarketingSettings(**footers("OLD")))
        await run.start(*CAMPAIGN_SERVICES, "config")
        config = run.processes["config"]
        token = install.settings.admin_token
        assert token is not None
        base = f"http://127.0.0.1:{config.http_port}"  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as admin:
            await run.launch()

            async def rendering() -> bool:
                return await run.item_count("status <> 'pending'") >= RECIPIENTS // 10

            await run.until(rendering, "rendering under way")
            changed = await admin.put("/settings/marketing", json=footers("NEW"))
            # not yet generated, or generated and not yet rendered
            still_rendering = RECIPIENTS - await run.item_count("status <> 'pending'")

            await run.received(MID_CAMPAIGN)
            in_flight = await run.in_flight()
            switched = await admin.put("/settings/smtp", json={"port": second.port})
            switched_at = time.monotonic()
            at_switch = smtp.handler.count()
        assert changed.status_code == 200 and changed.json()["announced"], changed.text
        assert switched.status_code == 200 and switched.json()["announced"], switched.text

        figures = await run.figures(
            "settings-change",
            in_flight=len(in_flight),
            fault_over=switched_at,
            servers=[second],
        )
        figures.extra.update(
            first_server=smtp.handler.count(), second_server=second.handler.count()
        )
        run.report(figures)
        first_kinds, second_kinds = footer_kinds(smtp), footer_kinds(second)
        print(f"footers at the first server {first_kinds}, at the second {second_kinds}")

    assert still_rendering > 0, "rendering was over before the footers changed"
    assert at_switch < RECIPIENTS, "the campaign was over before the switch"
    figures.check(zero_duplicates=False)
    assert second.handler.count() > 0, "the second server got nothing after the switch"
    assert first_kinds["OLD"] + second_kinds["OLD"] > 0, "rendered before the change: old footer"
    assert first_kinds["NEW"] + second_kinds["NEW"] > 0, "rendered after the change: new footer"
