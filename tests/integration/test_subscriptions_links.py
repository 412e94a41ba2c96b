"""The footer's links against the subscriptions service in its own process: one-click,
refused tokens, key rotation, preferences, and a running campaign skipping who left."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from mailroom_common.signing import Purpose, Signer

from tests.support.environment import Installation
from tests.support.scenario import campaign_reaches, launched_campaign, smtp_received
from tests.support.seed import make_audience, make_campaign
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
OLD_KEY = "an-old-signing-key-0123456789abcdef"
NEW_KEY = "the-new-signing-key-0123456789abcdef"


@pytest.fixture
async def rotated() -> AsyncIterator[Installation]:
    """An installation whose signing key was rotated: OLD_KEY is the previous one."""
    install = Installation(signing_key=NEW_KEY, signing_key_previous=OLD_KEY)
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


def signer_of(install: Installation) -> Signer:
    return Signer(install.settings.signing_key.get_secret_value().encode())


def base_url(process: object) -> str:
    return f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]


async def contact_id(pool: asyncpg.Pool, email: str) -> int:
    found = await pool.fetchval("SELECT id FROM contacts WHERE email = $1", email)
    assert isinstance(found, int), email
    return found


async def statuses(pool: asyncpg.Pool, email: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT m.status FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " WHERE lower(c.email) = lower($1)",
        email,
    )
    return {r["status"] for r in rows}


def link(base: str, signer: Signer, contact: int, source: str, purpose: Purpose) -> str:
    path = "unsubscribe" if purpose == "unsubscribe" else "preferences"
    return f"{base}/{path}/{signer.link_token(contact, source, purpose)}"


async def test_one_click_unsubscribes_at_once_and_twice_is_harmless(
    installation: Installation,
) -> None:
    install = installation
    pool = install.pool
    assert pool is not None
    audience = await make_audience(pool, 20)
    campaign_id = await make_campaign(pool, audience)
    process = install.start_services("subscriptions")
    signer = signer_of(install)
    email = sorted(audience.eligible)[3]
    url = link(
        base_url(process), signer, await contact_id(pool, email), f"c{campaign_id}", "unsubscribe"
    )
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        page = await client.get(url)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert await statuses(pool, email) == {"subscribed"}, "a GET changes nothing"

        first = await client.post(url, data=ONE_CLICK)
        assert first.status_code == 200, first.text
        assert "location" not in first.headers
        assert await statuses(pool, email) == {"unsubscribed"}
        assert (
            await pool.fetchval("SELECT count(*) FROM suppressions WHERE email = $1", email) == 0
        ), "one-click leaves only the campaign's lists"

        second = await client.post(url, data=ONE_CLICK)
        assert second.status_code == 200
        assert await statuses(pool, email) == {"unsubscribed"}
        assert first.headers["cache-control"] == "no-store"
        assert "set-cookie" not in first.headers

        french = await client.get(url, headers={"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8"})
        assert '<html lang="fr">' in french.text and "Se désabonner" in french.text
        unknown = await client.get(url, headers={"Accept-Language": "xx, tlh;q=0.5"})
        assert '<html lang="en">' in unknown.text

    # the other recipients are untouched
    other = sorted(audience.eligible)[4]
    assert await statuses(pool, other) == {"subscribed"}


async def test_refused_tokens_look_the_same_and_the_previous_key_still_works(
    rotated: Installation,
) -> None:
    install = rotated
    pool = install.pool
    assert pool is not None
    audience = await make_audience(pool, 10)
    campaign_id = await make_campaign(pool, audience)
    process = install.start_services("subscriptions")
    base = base_url(process)
    source = f"c{campaign_id}"
    existing = await contact_id(pool, sorted(audience.eligible)[0])
    missing = existing + 100_000
    current, previous = signer_of(install), Signer(OLD_KEY.encode())
    stranger = Signer(b"somebody-elses-key-0123456789abcdef")

    good = current.link_token(existing, source, "unsubscribe")
    payload, mac = good.split(".")
    other_payload = current.link_token(existing + 1, source, "unsubscribe").split(".")[0]
    refused_urls = [
        f"{base}/unsubscribe/{stranger.link_token(existing, source, 'unsubscribe')}",
        f"{base}/unsubscribe/{stranger.link_token(missing, source, 'unsubscribe')}",
        f"{base}/unsubscribe/{current.link_token(missing, source, 'unsubscribe')}",
        f"{base}/unsubscribe/{other_payload}.{mac}",  # tampered: another contact's payload
        f"{base}/unsubscribe/{payload}.{mac[:-2]}AA",  # tampered signature
        f"{base}/unsubscribe/{payload}",  # no signature
        f"{base}/unsubscribe/not-a-token",
        f"{base}/unsubscribe/{current.link_token(existing, source, 'manage')}",  # wrong purpose
        f"{base}/preferences/{good}",  # an unsubscribe token as a preferences token
        f"{base}/preferences/{current.link_token(missing, source, 'manage')}",
    ]
    answers = set()
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        for url in refused_urls:
            for method in ("GET", "POST"):
                data = ONE_CLICK if method == "POST" else None
                response = await client.request(method, url, data=data)
                answers.add((response.status_code, response.text))
        assert len(answers) == 1, "every refused token gets one and the same page"
        status, text = answers.pop()
        assert 400 <= status < 500 and "not valid" in text
        email = sorted(audience.eligible)[0]
        assert email not in text
        assert await statuses(pool, email) == {"subscribed"}

        # signed before the rotation: still accepted
        old = f"{base}/unsubscribe/{previous.link_token(existing, source, 'unsubscribe')}"
        assert (await client.post(old, data=ONE_CLICK)).status_code == 200
        assert await statuses(pool, email) == {"unsubscribed"}
        manage = f"{base}/preferences/{previous.link_token(existing, source, 'manage')}"
        page = await client.get(manage)
        assert page.status_code == 200 and email in page.text


async def test_preferences_change_lists_and_everything_suppresses(
    installation: Installation,
) -> None:
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 10)
    campaign_id = await make_campaign(pool, audience)
    list_b = await pool.fetchval("SELECT id FROM lists WHERE name = $1", audience.list_names[1])
    email = sorted(audience.eligible)[0]  # on list A
    contact = await contact_id(pool, email)
    await pool.execute(
        "INSERT INTO list_memberships (list_id, contact_id) VALUES ($1, $2)", list_b, contact
    )
    process = installation.start_services("subscriptions")
    url = link(base_url(process), signer_of(installation), contact, f"c{campaign_id}", "manage")
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        page = await client.get(url)
        assert page.status_code == 200
        assert page.text.count('type="checkbox"') == 2 and page.text.count(" checked") == 2
        assert re.search(r'<label for="list-\d+">news-a</label>', page.text)

        saved = await client.post(url, data={"action": "save", "list": str(list_b)})
        assert saved.status_code == 200 and 'role="status"' in saved.text
        rows = await pool.fetch(
            "SELECT l.name, m.status FROM list_memberships m JOIN lists l ON l.id = m.list_id"
            " WHERE m.contact_id = $1",
            contact,
        )
        assert {r["name"]: r["status"] for r in rows} == {
            "news-a": "unsubscribed",
            "news-b": "subscribed",
        }

        everything = await client.post(url, data={"action": "everything"})
        assert everything.status_code == 200
        assert await statuses(pool, email) == {"unsubscribed"}
        reason = await pool.fetchval("SELECT reason FROM suppressions WHERE email = $1", email)
        assert reason == "unsubscribed"

        # subscribing again to a list lifts the unsubscribe suppression
        back = await client.post(url, data={"action": "save", "list": str(list_b)})
        assert back.status_code == 200
        assert await pool.fetchval("SELECT count(*) FROM suppressions WHERE email = $1", email) == 0


async def test_messages_not_yet_sent_are_skipped_after_an_unsubscribe(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience, campaign_id, process = await launched_campaign(
        installation, smtp_server, 400, messages_per_second=100
    )
    await smtp_received(smtp_server, 20)
    # the last items in line: far from being sent at 100 per second
    waiting = await pool.fetch(
        "SELECT contact_id, email FROM campaign_items WHERE campaign_id = $1"
        " AND status IN ('pending', 'queued') ORDER BY id DESC LIMIT 30",
        campaign_id,
    )
    assert len(waiting) == 30
    signer = signer_of(installation)
    base = base_url(process)
    async with httpx.AsyncClient(timeout=10) as client:
        for row in waiting[:25]:
            url = link(base, signer, row["contact_id"], f"c{campaign_id}", "unsubscribe")
            assert (await client.post(url, data=ONE_CLICK)).status_code == 200
        for row in waiting[25:]:  # from everything, through the preferences page
            url = link(base, signer, row["contact_id"], f"c{campaign_id}", "manage")
            assert (await client.post(url, data={"action": "everything"})).status_code == 200
    left = {r["email"] for r in waiting}
    skipped = await pool.fetch(
        "SELECT email, error FROM campaign_items WHERE campaign_id = $1 AND status = 'skipped'",
        campaign_id,
    )
    assert {r["email"] for r in skipped} == left
    assert all("unsubscribed" in r["error"] for r in skipped)

    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed"
    assert status["counts"] == {"sent": 400 - 30, "skipped": 30}
    assert not left & set(smtp_server.handler.recipients())
    assert set(smtp_server.handler.recipients()) == audience.eligible - left


def test_every_language_has_every_string() -> None:
    from mailroom_subscriptions.i18n import STRINGS, choose_language

    for language, table in STRINGS.items():
        assert set(table) == set(STRINGS["en"]), language
    assert choose_language("de-AT;q=0.4, fr;q=0.7") == "fr"
    assert choose_language("fr;q=0") == "en"
    assert choose_language(None) == "en"
