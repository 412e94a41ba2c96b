"""The administrator's console in a real headless browser (Debian's chromium driven by
playwright), against real services: sign in with the keyboard, change the SMTP account and see
a campaign's mail arrive at the new server, break a footer and see the refusal, watch a job go
down and up while its service stops and starts, pause and resume a running campaign; axe-core
on every page, every page at phone width, a screenshot of each (printed at the end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mailroom_common.events import CampaignLaunch
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore, SmtpAccount
from playwright.async_api import ViewportSize

from mailroom.campaigns import send_command
from tests.integration.test_subscriptions_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.environment import RUN_ADMIN_TOKEN, Installation, wait_for
from tests.support.scenario import campaign_reaches, pool_of
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]

PAGES = ("smtp", "marketing", "bounce", "jobs", "campaigns")
PHONE: ViewportSize = {"width": 390, "height": 844}
SLOW_RATE = 20  # messages per second: the big campaign runs long enough to be paused
BIG = 600
WAIT_MS = 120_000


def received_by(smtp: SmtpServer, addresses: set[str]) -> dict[str, int]:
    counts = smtp.handler.recipients()
    return {a: counts[a] for a in addresses if counts[a]}


async def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (axe-playwright-python ships
    axe.min.js; playwright's evaluate is not bound by the page's CSP)."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_the_console_in_a_browser(installation: Installation, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    pool = pool_of(installation)
    shots = tmp_path / "console-screenshots"
    shots.mkdir()
    with SmtpServer() as first, SmtpServer() as second:
        await use_smtp_server(pool, first.port, messages_per_second=SLOW_RATE, pool_size=2)
        small = await make_audience(pool, 30, tag="small")
        big = await make_audience(pool, BIG, tag="big")
        console = installation.start_services("config", log_name="console")
        installation.start_services(
            "item_generator", "message_processor", "outbound_sender", "completion", log_name="work"
        )
        autoresponder = installation.start_services("autoresponder", log_name="autoresponder")
        base = f"http://127.0.0.1:{console.http_port}"  # type: ignore[attr-defined]

        before_switch = await make_campaign(pool, small, name="Before the switch")
        await send_command(installation.settings, CampaignLaunch(campaign_id=before_switch))
        assert (await campaign_reaches(installation, before_switch))["status"] == "completed"
        assert set(received_by(first, small.eligible)) == small.eligible

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            try:
                context = await browser.new_context(locale="en-US", base_url=base)
                page = await context.new_page()
                violations: dict[str, list[str]] = {}

                async def shoot(name: str) -> None:
                    await page.screenshot(path=shots / f"{name}.png", full_page=True)
                    found = await serious_violations(page)
                    if found:
                        violations[name] = found

                # --- sign in, with the keyboard alone ---------------------------------------
                response = await page.goto("/console/smtp")
                assert response is not None and response.url.startswith(f"{base}/console/sign-in")
                await shoot("01-sign-in")
                await page.keyboard.press("Tab")
                skip = await page.evaluate("document.activeElement.textContent")
                assert skip == "Skip to the content"
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.id") == "name"
                await page.keyboard.type("Ann Admin")
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.id") == "token"
                await page.keyboard.type(RUN_ADMIN_TOKEN)
                await page.keyboard.press("Enter")
                await page.get_by_role("heading", name="Email SMTP Configuration").wait_for()
                assert page.url == f"{base}/console/smtp"
                await page.get_by_text("Signed in as").wait_for()

                # --- the SMTP account: switch to the second server --------------------------
                assert await page.get_by_label("Port", exact=True).input_value() == str(first.port)
                await page.get_by_label("Port", exact=True).fill(str(second.port))
                await page.get_by_role("button", name="Save the SMTP account").click()
                await page.get_by_role("status").filter(has_text="Saved as version").wait_for()
                await page.get_by_label("Send it to").fill("admin@example.com")
                await page.get_by_role("button", name="Send test email").click()
                answer = page.locator("#test-result")
                await answer.wait_for()
                assert "250" in await answer.inner_text()
                await shoot("02-smtp")
                account, _ = await SettingsStore(pool, installation.settings.settings_key).load(
                    SmtpAccount
                )
                assert account.port == second.port
                changed_by = await pool.fetchval(
                    "SELECT changed_by FROM settings_history WHERE group_name = 'smtp'"
                    " ORDER BY version DESC LIMIT 1"
                )
                assert changed_by == "Ann Admin"

                after_switch = await make_campaign(pool, small, name="After the switch")
                await send_command(installation.settings, CampaignLaunch(campaign_id=after_switch))
                assert (await campaign_reaches(installation, after_switch))["status"] == "completed"
                assert received_by(second, small.eligible) == dict.fromkeys(small.eligible, 1)
                assert received_by(first, small.eligible) == dict.fromkeys(small.eligible, 1)

                # --- Marketing: a footer without its link is refused -------------------------
                await page.get_by_role("link", name="Marketing").click()
                await page.get_by_role("heading", name="Marketing Configuration").wait_for()
                preview = page.frame_locator("#footer-preview")
                await preview.get_by_text("Plain-text part").wait_for()
                await preview.get_by_text("Unsubscribe:").wait_for()  # the plain-text part
                unsubscribe = preview.get_by_role("link", name="Unsubscribe")  # the HTML part
                assert (await unsubscribe.get_attribute("href") or "").endswith(
                    "/unsubscribe/sample-contact-token"
                )
                await shoot("03-marketing")
                footer = page.get_by_label("Plain-text footer")
                await footer.fill("Thanks for reading! Manage: {{ manage_url }}")
                # the live preview refuses it as soon as the typing stops
                await preview.get_by_role("alert").filter(has_text="unsubscribe link").wait_for()
                await page.get_by_role("button", name="Save the footers").click()
                error = page.locator("#f-text_footer-error")
                await error.wait_for()
                assert "must contain the unsubscribe link" in await error.inner_text()
                assert await footer.get_attribute("aria-invalid") == "true"
                await page.get_by_role("alert").filter(has_text="Nothing was saved").wait_for()
                await shoot("04-marketing-refused")
                _, version = await SettingsStore(pool, installation.settings.settings_key).load(
                    MarketingSettings
                )
                assert version == 0  # nothing stored
                await page.get_by_role(
                    "button", name="Restore the default plain-text footer"
                ).click()
                await page.get_by_role("status").filter(has_text="default footer").wait_for()
                assert "{{ unsubscribe_url }}" in await footer.input_value()

                # --- Bounce ---------------------------------------------------------------
                await page.get_by_role("link", name="Bounce").click()
                await page.get_by_text("Use a dedicated mailbox.").wait_for()
                await page.get_by_role("button", name="Test connection").click()
                await page.locator("#test-result").wait_for()
                await shoot("05-bounce")

                # --- the Job Manager: a job goes down and comes back ------------------------
                await page.get_by_role("link", name="Job Manager").click()
                row = "#job-process-autoresponder-messages"
                await page.wait_for_selector(f"{row}:not([data-state=down])")
                await shoot("06-jobs")
                url = page.url
                installation.terminate(autoresponder)
                await page.wait_for_selector(f"{row}[data-state=down]", timeout=WAIT_MS)
                assert page.url == url  # refreshed in place, never reloaded
                await page.screenshot(path=shots / "07-jobs-down.png", full_page=True)
                installation.start_services("autoresponder", log_name="autoresponder-again")
                await page.wait_for_selector(f"{row}:not([data-state=down])", timeout=WAIT_MS)
                await page.screenshot(path=shots / "08-jobs-up.png", full_page=True)
                await page.get_by_role(
                    "button", name="Run now: Mark campaigns as completed"
                ).click()
                await page.get_by_role("status").filter(has_text="to run now").wait_for()

                # --- Campaigns: pause and resume a running campaign -------------------------
                running = await make_campaign(pool, big, name="Big news")
                await send_command(installation.settings, CampaignLaunch(campaign_id=running))
                await page.get_by_role("link", name="Campaigns").click()
                this = f"#campaign-{running}"
                await page.wait_for_selector(f"{this}[data-status=sending]", timeout=WAIT_MS)
                await wait_for(
                    lambda: _some(second, big.eligible), 60, "the big campaign's first emails"
                )
                await page.get_by_role("link", name="Pause Big news").click()
                await page.get_by_role("heading", name=f"Pause campaign {running}?").wait_for()
                await shoot("09-confirm-pause")
                await page.get_by_role("button", name="Yes, pause the campaign").click()
                await page.wait_for_selector(f"{this}[data-status=paused]", timeout=WAIT_MS)
                status = await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", running)
                assert status == "paused"
                assert len(received_by(second, big.eligible)) < len(big.eligible)
                await shoot("10-campaigns-paused")
                await page.get_by_role("link", name="Resume Big news").click()
                await page.get_by_role("button", name="Yes, resume the campaign").click()
                await page.wait_for_selector(f"{this}[data-status=completed]", timeout=WAIT_MS)
                await shoot("11-campaigns-completed")
                changes = page.get_by_role("table", name="changes of every settings group")
                by_ann = changes.get_by_role("row").filter(has_text="Ann Admin")
                assert await by_ann.filter(has_text="port").count() == 1

                # --- phone width: nothing wider than the screen -----------------------------
                phone = await browser.new_context(
                    locale="en-US",
                    base_url=base,
                    viewport=PHONE,
                    storage_state=await context.storage_state(),
                )
                small_page = await phone.new_page()
                for name in PAGES:
                    await small_page.goto(f"/console/{name}")
                    await small_page.locator("h1").wait_for()
                    overflow = await small_page.evaluate(
                        "document.documentElement.scrollWidth"
                        " - document.documentElement.clientWidth"
                    )
                    await small_page.screenshot(path=shots / f"phone-{name}.png", full_page=True)
                    assert overflow <= 0, f"{name} is {overflow} px wider than a phone"
            finally:
                await browser.close()

        assert received_by(second, big.eligible) == dict.fromkeys(big.eligible, 1)
        assert received_by(first, big.eligible) == {}
    print(f"\nscreenshots: {shots}: {', '.join(sorted(p.name for p in shots.iterdir()))}")
    assert violations == {}, violations


async def _some(smtp: SmtpServer, addresses: set[str]) -> bool:
    return bool(received_by(smtp, addresses))
