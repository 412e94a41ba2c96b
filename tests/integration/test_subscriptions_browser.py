"""End to end in a real headless browser (Debian's chromium driven by playwright): the links
of a delivered message, the confirm click, the preferences form, then a next campaign that
reaches neither the unsubscribed contact nor the changed one."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from mailroom_common.events import CampaignLaunch
from mailroom_common.runtime_settings import MarketingSettings

from mailroom.campaigns import send_command
from tests.support.environment import Installation
from tests.support.scenario import (
    campaign_reaches,
    change_settings,
    launched_campaign,
    pool_of,
    received_count,
)
from tests.support.seed import Audience, make_campaign
from tests.support.smtp import Received, SmtpServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]

RECIPIENTS = 40  # user000000..000019 on news-a, 000020..000039 on news-b (+10 of them on a)


def address(i: int) -> str:
    return f"user{i:06d}@news.example.test"


def message_to(smtp: SmtpServer, email: str) -> Received:
    with smtp.handler.lock:
        found = [r for r in smtp.handler.received if email in (x.lower() for x in r.recipients)]
    assert len(found) == 1, email
    return found[0]


def footer_link(received: Received, path: str) -> str:
    match = re.search(rf'href="(https?://[^"]+/{path}/[\w.-]+)"', received.part("html"))
    assert match is not None, f"no /{path}/ link"
    return match.group(1)


async def test_unsubscribe_and_preferences_in_a_browser(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    from playwright.async_api import async_playwright

    pool = pool_of(installation)
    public = installation.start_services("subscriptions", log_name="public")
    base = f"http://127.0.0.1:{public.http_port}"  # type: ignore[attr-defined]
    await change_settings(installation, MarketingSettings(public_base_url=base))
    _audience, campaign_id, _ = await launched_campaign(installation, smtp_server, RECIPIENTS)
    assert (await campaign_reaches(installation, campaign_id))["status"] == "completed"

    leaving, changing = address(15), address(16)  # both on news-a
    news_b = await pool.fetchval("SELECT id FROM lists WHERE name = 'news-b'")
    await pool.execute(
        "INSERT INTO list_memberships (list_id, contact_id)"
        " SELECT $1, id FROM contacts WHERE email = $2",
        news_b,
        changing,
    )
    unsubscribe_url = footer_link(message_to(smtp_server, leaving), "unsubscribe")
    preferences_url = footer_link(message_to(smtp_server, changing), "preferences")
    assert unsubscribe_url.startswith(base + "/unsubscribe/")
    assert message_to(smtp_server, leaving).message["List-Unsubscribe"] == f"<{unsubscribe_url}>"

    shots = Path(tempfile.mkdtemp(prefix="mailroom-subscriptions-"))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(locale="en-US")
            response = await page.goto(unsubscribe_url)
            assert response is not None and response.status == 200
            assert await page.get_attribute("html", "lang") == "en"
            await page.screenshot(path=shots / "1-unsubscribe.png", full_page=True)
            await page.get_by_role("button", name="Unsubscribe").click()
            await page.get_by_role("heading", name="You are unsubscribed").wait_for()
            await page.screenshot(path=shots / "2-unsubscribed.png", full_page=True)

            response = await page.goto(preferences_url)
            assert response is not None and response.status == 200
            news_a_box = page.get_by_label("news-a")
            assert await news_a_box.is_checked()
            assert await page.get_by_label("news-b").is_checked()
            await page.screenshot(path=shots / "3-preferences.png", full_page=True)
            await news_a_box.uncheck()
            await page.get_by_role("button", name="Save my choices").click()
            await page.get_by_role("status").wait_for()
            assert not await page.get_by_label("news-a").is_checked()
            assert await page.get_by_label("news-b").is_checked()
            await page.screenshot(path=shots / "4-preferences-saved.png", full_page=True)
        finally:
            await browser.close()
    names = ("1-unsubscribe", "2-unsubscribed", "3-preferences", "4-preferences-saved")
    print(f"\nscreenshots: {', '.join(str(shots / f'{n}.png') for n in names)}")

    # a next campaign to news-a reaches neither of them
    before = received_count(smtp_server)
    next_id = await make_campaign(pool, Audience(list_names=["news-a"]), name="Winter news")
    await send_command(installation.settings, CampaignLaunch(campaign_id=next_id))
    status = await campaign_reaches(installation, next_id)
    assert status["status"] == "completed"
    with smtp_server.handler.lock:
        reached = {x.lower() for r in smtp_server.handler.received[before:] for x in r.recipients}
    expected = {address(i) for i in range(30)} - {leaving, changing}
    assert reached == expected
