"""The administrator's console over plain HTTP: nothing without a session, nothing changed by
a form without its CSRF token or from another origin, the session's cookie, sign-out, expiry,
failed sign-ins, write-only passwords, and the pages' Content-Security-Policy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore, SmtpAccount

from tests.support.console import csrf_of, sign_in
from tests.support.environment import RUN_ADMIN_TOKEN, Installation
from tests.support.seed import make_audience, make_campaign

pytestmark = pytest.mark.integration

PAGES = ("jobs", "campaigns", "smtp", "marketing", "bounce", "marketing/preview")
FORMS = (
    "smtp",
    "smtp/test",
    "marketing",
    "marketing/restore",
    "marketing/preview",
    "bounce",
    "bounce/test",
    "jobs/mark-campaigns-completed/run",
    "sign-out",
)
PASSWORD = "s3cret-smtp-Pa55-7f1d"


@pytest.fixture(scope="module")
async def console() -> AsyncIterator[tuple[Installation, str]]:
    install = Installation()
    await install.setup()
    try:
        process = install.start_services("config", log_name="console")
        yield install, f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    finally:
        await install.teardown()


async def smtp_version(install: Installation) -> int:
    assert install.pool is not None
    _, version = await SettingsStore(install.pool, install.settings.settings_key).load(SmtpAccount)
    return version


async def declared_too_large(base: str, cookies: httpx.Cookies) -> int:
    """The status of a POST that declares 20 MB and sends none of it (raw HTTP)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    writer.write(
        f"POST /console/smtp HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {20 * 1024 * 1024}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    return int(status_line.split()[1])


async def test_without_a_session_nothing_is_shown_or_changed(
    console: tuple[Installation, str],
) -> None:
    install, base = console
    assert install.pool is not None
    campaign_id = await make_campaign(install.pool, await make_audience(install.pool, 5))
    async with httpx.AsyncClient(base_url=base) as client:
        for page in PAGES:
            answer = await client.get(f"/console/{page}")
            assert answer.status_code == 303, page
            assert answer.headers["location"].startswith("/console/sign-in?next=/console/")
        for live in ("jobs/live", "campaigns/live"):
            assert (await client.get(f"/console/{live}")).status_code == 401
        for form in (*FORMS, f"campaigns/{campaign_id}/cancel"):
            answer = await client.post(
                f"/console/{form}", data={"host": "evil.example", "csrf_token": "x"}
            )
            assert answer.status_code == 401, form
        # a forged cookie is no session either
        client.cookies.set("mailroom_console", "forged.0123")
        assert (await client.post("/console/smtp", data={"port": "2525"})).status_code == 401
    assert await smtp_version(install) == 0
    status = await install.pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)
    assert status == "draft"


async def test_forms_need_the_csrf_token_and_the_same_origin(
    console: tuple[Installation, str],
) -> None:
    install, base = console
    async with httpx.AsyncClient(base_url=base) as client:
        csrf = await sign_in(client, RUN_ADMIN_TOKEN)
        before = await smtp_version(install)
        refused = [
            ({"port": "2525"}, {}),  # no token
            ({"port": "2525", "csrf_token": "0" * 64}, {}),  # a wrong one
            ({"port": "2525", "csrf_token": csrf}, {"Origin": "http://evil.example"}),
            ({"port": "2525", "csrf_token": csrf}, {"Origin": "null"}),
            ({"port": "2525", "csrf_token": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        ]
        for data, headers in refused:
            answer = await client.post("/console/smtp", data=data, headers=headers)
            assert answer.status_code == 403, (data, headers, answer.text)
        # another session's token is no good either
        async with httpx.AsyncClient(base_url=base) as other:
            their_csrf = await sign_in(other, RUN_ADMIN_TOKEN, name="Bob")
        answer = await client.post("/console/smtp", data={"port": "2525", "csrf_token": their_csrf})
        assert answer.status_code == 403
        assert await smtp_version(install) == before

        # the same form, same origin, with its token: changed, by the signed-in person
        answer = await client.post(
            "/console/smtp",
            data={"csrf_token": csrf, "port": "2525", "password": PASSWORD},
            headers={"Origin": base, "Sec-Fetch-Site": "same-origin"},
        )
        assert answer.status_code == 303, answer.text
        assert await smtp_version(install) == before + 1
        assert install.pool is not None
        row = await install.pool.fetchrow(
            "SELECT changed_by, changed_keys FROM settings_history WHERE group_name = 'smtp'"
            " ORDER BY version DESC LIMIT 1"
        )
        assert row is not None and row["changed_by"] == "Ann Admin"
        assert set(row["changed_keys"]) >= {"port", "password"}
        # write-only: the page says a password is set, never shows it
        page = (await client.get("/console/smtp")).text
        assert "A password is set" in page and PASSWORD not in page
        for path in PAGES:
            assert PASSWORD not in (await client.get(f"/console/{path}")).text
        # a refused change: shown inline, nothing stored
        answer = await client.post(
            "/console/smtp", data={"csrf_token": csrf, "port": "99999"}, headers={"Origin": base}
        )
        assert answer.status_code == 422
        assert 'id="f-port-error"' in answer.text and 'aria-invalid="true"' in answer.text
        assert await smtp_version(install) == before + 1
        # a test email's recipient passes the one address check (no SMTPUTF8)
        answer = await client.post(
            "/console/smtp/test",
            data={"csrf_token": csrf, "to": "jürgen@example.com"},
            headers={"Origin": base},
        )
        assert answer.status_code == 422 and "SMTPUTF8" in answer.text
        # no secret in the service's log: the password, the admin token, the session
        session_cookie = client.cookies.get("mailroom_console")
        assert session_cookie
        logged = install.log_text()
        assert "signed in" in logged  # the log is the right one
        for secret in (PASSWORD, RUN_ADMIN_TOKEN, session_cookie, session_cookie.split(".")[0]):
            assert secret not in logged


async def test_sessions_cookie_sign_out_and_expiry(console: tuple[Installation, str]) -> None:
    install, base = console
    assert install.pool is not None
    sessions = await install.pool.fetchval("SELECT count(*) FROM console_sessions")
    async with httpx.AsyncClient(base_url=base) as client:
        form = await client.get("/console/sign-in")
        # no sign-in form cookie (another site's form): refused
        async with httpx.AsyncClient(base_url=base) as stranger:
            answer = await stranger.post(
                "/console/sign-in",
                data={"csrf_token": csrf_of(form.text), "name": "X", "token": RUN_ADMIN_TOKEN},
            )
            assert answer.status_code == 403
            assert "mailroom_console=" not in answer.headers.get("set-cookie", "")
        # a wrong token: refused, slowly, and no session
        answer = await client.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(form.text), "name": "X", "token": RUN_ADMIN_TOKEN + "x"},
        )
        assert answer.status_code == 401
        assert "mailroom_console=" not in answer.headers.get("set-cookie", "")
        assert await install.pool.fetchval("SELECT count(*) FROM console_sessions") == sessions

        answer = await client.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(form.text), "name": "Ann", "token": RUN_ADMIN_TOKEN},
        )
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie.split("mailroom_console_sign_in")[0]
        page = await client.get("/console/jobs")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        for path in PAGES[:-1]:
            html = (await client.get(f"/console/{path}")).text
            assert not re.search(r"<script(?![^>]*\bsrc=)", html), path  # no inline script
            assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html), path  # no handler
            assert not re.search(r"<[a-z][^>]*\sstyle\s*=", html), path

        # a forged or altered cookie opens nothing; signing in again makes a new session
        secret = client.cookies["mailroom_console"].split(".")[0]
        for forged in (f"{secret}.{'0' * 64}", f"{secret}x.{secret}", "a.b", "x" * 5000):
            async with httpx.AsyncClient(
                base_url=base, cookies={"mailroom_console": forged}
            ) as forger:
                assert (await forger.get("/console/jobs")).status_code == 303, forged
                assert (await forger.get("/console/jobs/live")).status_code == 401, forged
        await sign_in(client, RUN_ADMIN_TOKEN)
        assert client.cookies["mailroom_console"].split(".")[0] != secret
        page = await client.get("/console/jobs")

        # sign-out ends the session on the server: the old cookie opens nothing
        saved = dict(client.cookies)
        await client.post("/console/sign-out", data={"csrf_token": csrf_of(page.text)})
        async with httpx.AsyncClient(base_url=base, cookies=saved) as replay:
            assert (await replay.get("/console/jobs")).status_code == 303

        # a session unused past its time has ended
        await sign_in(client, RUN_ADMIN_TOKEN)
        await install.pool.execute("UPDATE console_sessions SET expires_at = now()")
        assert (await client.get("/console/jobs")).status_code == 303

    # behind https (a proxy that says so): the cookie is Secure and host-only
    async with httpx.AsyncClient(base_url=base, headers={"X-Forwarded-Proto": "https"}) as tls:
        form = await tls.get("/console/sign-in")
        nonce = form.cookies["mailroom_console_sign_in"]  # Secure: httpx keeps it off http
        answer = await tls.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(form.text), "name": "Ann", "token": RUN_ADMIN_TOKEN},
            headers={"Cookie": f"mailroom_console_sign_in={nonce}"},
        )
        assert answer.status_code == 303
        (cookie,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith("__Host-")]
        assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie


async def test_a_footer_without_its_link_is_refused_inline(
    console: tuple[Installation, str],
) -> None:
    install, base = console
    assert install.pool is not None
    store = SettingsStore(install.pool, install.settings.settings_key)
    before = await store.load(MarketingSettings)
    async with httpx.AsyncClient(base_url=base) as client:
        csrf = await sign_in(client, RUN_ADMIN_TOKEN)
        for footer, problem in (
            ("Bye! {{ manage_url }}", "must contain the unsubscribe link"),
            ("{% if %}", "line 1"),
        ):
            answer = await client.post(
                "/console/marketing", data={"csrf_token": csrf, "text_footer": footer}
            )
            assert answer.status_code == 422
            assert 'id="f-text_footer-error"' in answer.text and problem in answer.text
            preview = await client.post(
                "/console/marketing/preview",
                data={"csrf_token": csrf, "text_footer": footer, "html_footer": "x"},
            )
            assert "Refused" in preview.text and "text_footer" in preview.text
            preview_csp = preview.headers["content-security-policy"]
            assert "default-src 'none'" in preview_csp and "script-src" not in preview_csp
    assert await store.load(MarketingSettings) == before


async def test_bad_requests_are_refused_plainly(console: tuple[Installation, str]) -> None:
    install, base = console
    before = await smtp_version(install)
    async with httpx.AsyncClient(base_url=base) as client:
        csrf = await sign_in(client, RUN_ADMIN_TOKEN)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        bad_bodies = [
            (f"csrf_token={csrf}&host=%ff%fe".encode(), form, 400),  # not UTF-8
            (b"\xff\xfe\x00garbage", form, 400),
            ("&".join(f"f{i}=1" for i in range(200)).encode(), form, 400),  # too many fields
            (b'{"port": 2525}', {"Content-Type": "application/json"}, 400),
        ]
        for body, headers, status in bad_bodies:
            answer = await client.post("/console/smtp", content=body, headers=headers)
            assert answer.status_code == status, (body[:40], answer.text)
        assert await declared_too_large(base, client.cookies) == 413
        # ids past int64, unknown actions, unknown campaigns: 404, nothing published
        for path in (f"/console/campaigns/{2**70}/pause", "/console/campaigns/1/explode"):
            assert (await client.get(path)).status_code == 404
        answer = await client.post("/console/campaigns/999999/cancel", data={"csrf_token": csrf})
        assert answer.status_code == 404
        # an action the campaign's status does not allow: 409, nothing published
        assert install.pool is not None
        draft = await make_campaign(install.pool, await make_audience(install.pool, 3, "draft"))
        for action in ("pause", "resume"):
            answer = await client.post(
                f"/console/campaigns/{draft}/{action}", data={"csrf_token": csrf}
            )
            assert answer.status_code == 409 and "is draft" in answer.text
        answer = await client.post("/console/jobs/no-such-job/run", data={"csrf_token": csrf})
        assert answer.status_code == 404 and "no job" in answer.text
        # a refused job: down (nothing runs it here), said in words
        answer = await client.post(
            "/console/jobs/mark-campaigns-completed/run", data={"csrf_token": csrf}
        )
        assert answer.status_code == 409 and "is down" in answer.text
        # markup in a value is shown as text, never as markup
        answer = await client.post(
            "/console/smtp", data={"csrf_token": csrf, "host": "<script>alert(1)</script>"}
        )
        assert answer.status_code == 422
        assert "<script>alert" not in answer.text and "&lt;script&gt;" in answer.text
    assert await smtp_version(install) == before
    # after sign-in, only a console page of ours: never another site
    async with httpx.AsyncClient(base_url=base) as client:
        for target in ("https://evil.example/", "//evil.example/console/x", "/console/../x"):
            page = await client.get("/console/sign-in", params={"next": target})
            answer = await client.post(
                "/console/sign-in",
                data={
                    "csrf_token": csrf_of(page.text),
                    "name": "Ann",
                    "token": RUN_ADMIN_TOKEN,
                    "next": target,
                },
            )
            assert answer.headers["location"] == "/console/jobs", target


async def test_a_trusted_proxy_names_the_user() -> None:
    install = Installation(
        console_trusted_header="X-Forwarded-User", console_trusted_proxies='["127.0.0.1/32"]'
    )
    await install.setup()
    try:
        process = install.start_services("config", log_name="console-proxy")
        base = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/console/sign-in", headers={"X-Forwarded-User": "carol"})
            assert "Continue as carol" in page.text
            answer = await client.post(
                "/console/sign-in",
                data={"csrf_token": csrf_of(page.text), "mode": "proxy"},
                headers={"X-Forwarded-User": "carol"},
            )
            assert answer.status_code == 303
            assert "Signed in as <strong>carol</strong>" in (await client.get("/console/jobs")).text
            # as a real proxy sends it: the browser's address in X-Forwarded-For (the proxy
            # is still the peer the trust is about, not the browser)
            async with httpx.AsyncClient(base_url=base) as proxied:
                forwarded = {"X-Forwarded-User": "dave", "X-Forwarded-For": "203.0.113.5"}
                page = await proxied.get("/console/sign-in", headers=forwarded)
                assert "Continue as dave" in page.text
                answer = await proxied.post(
                    "/console/sign-in",
                    data={"csrf_token": csrf_of(page.text), "mode": "proxy"},
                    headers=forwarded,
                )
                assert answer.status_code == 303
            # without the header, "proxy" mode is no sign-in
            async with httpx.AsyncClient(base_url=base) as other:
                page = await other.get("/console/sign-in")
                assert "Continue as" not in page.text
                answer = await other.post(
                    "/console/sign-in", data={"csrf_token": csrf_of(page.text), "mode": "proxy"}
                )
                assert answer.status_code == 422
    finally:
        await install.teardown()


async def test_a_campaigns_unsubscribes_are_counted_and_shown(
    console: tuple[Installation, str],
) -> None:
    from mailroom_subscriptions.store import save_preferences, unsubscribe

    install, base = console
    assert install.pool is not None
    audience = await make_audience(install.pool, 6, tag="leaving")
    campaign_id = await make_campaign(install.pool, audience, name="Leaving news")
    contacts = [
        r["id"]
        for r in await install.pool.fetch(
            "SELECT id FROM contacts WHERE email LIKE 'user%@leaving.example.test' ORDER BY id"
        )
    ]
    assert await unsubscribe(install.pool, contacts[0], None, False, f"c{campaign_id}")
    assert await save_preferences(install.pool, contacts[1], set(), f"c{campaign_id}")
    # again: nothing left to leave, not counted twice; another source: not this campaign's
    assert await unsubscribe(install.pool, contacts[0], None, False, f"c{campaign_id}")
    assert await unsubscribe(install.pool, contacts[2], None, False, "a1")
    counted = await install.pool.fetchval(
        "SELECT unsubscribes FROM campaigns WHERE id = $1", campaign_id
    )
    assert counted == 2
    async with httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, RUN_ADMIN_TOKEN)
        page = (await client.get("/console/campaigns/live")).text
    row = page[page.index(f'id="campaign-{campaign_id}"') :]
    assert '<td data-label="Unsubscribes">2</td>' in row[: row.index("</tr>")]


MARKUP = "<img src=x onerror=alert(1)>\"'</td><script>alert(2)</script>"


async def test_stored_markup_is_shown_as_text(console: tuple[Installation, str]) -> None:
    """What others wrote (a campaign's name, a pause reason, a job's error) never becomes
    markup in the console; the footer preview, which shows the admin's own HTML as HTML,
    runs in a sandbox (the frame's and its own Content-Security-Policy)."""
    from mailroom_common.jobs import JOBS

    install, base = console
    assert install.pool is not None
    audience = await make_audience(install.pool, 1, tag="markup")
    campaign_id = await make_campaign(install.pool, audience, name=f"Sale {MARKUP}")
    for status in ("scheduled", "paused"):
        await install.pool.execute(
            "UPDATE campaigns SET status = $2, paused_from = 'scheduled', pause_reason = $3"
            " WHERE id = $1",
            campaign_id,
            status,
            MARKUP,
        )
    await install.pool.execute(
        "INSERT INTO job_heartbeats (job, instance, service, last_seen, last_error, last_error_at)"
        " VALUES ($1, 'markup:1', $2, now(), $3, now())",
        JOBS[0].name,
        JOBS[0].service,
        MARKUP,
    )
    async with httpx.AsyncClient(base_url=base) as client:
        csrf = await sign_in(client, RUN_ADMIN_TOKEN)
        for path in (
            "campaigns",
            "campaigns/live",
            f"campaigns/{campaign_id}/resume",
            "jobs",
            "jobs/live",
        ):
            page = (await client.get(f"/console/{path}")).text
            assert "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&lt;/td&gt;" in page, path
            assert "<img src=x" not in page and "<script>alert" not in page, path
        frame = (await client.get("/console/marketing")).text
        assert re.search(r'<iframe [^>]*\bsandbox=""', frame)
        footer = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
        preview = await client.post(
            "/console/marketing/preview",
            data={"csrf_token": csrf, "html_footer": footer + "{{ unsubscribe_url }}"},
        )
        assert preview.status_code == 200 and footer in preview.text  # as a mail client sees it
        policy = [d.strip() for d in preview.headers["content-security-policy"].split(";")]
        assert "sandbox" in policy and "default-src 'none'" in policy


async def test_item_counts_are_shared_for_their_period(console: tuple[Installation, str]) -> None:
    """A count kept for the refreshes of every tab is not counted again; the campaigns
    themselves (status, name, new ones) are read fresh each time."""
    from mailroom_common.campaign_counts import KeptCounts, campaign_progress

    install, _ = console
    pool = install.pool
    assert pool is not None
    audience = await make_audience(pool, 3, tag="shared")
    campaign_id = await make_campaign(pool, audience, name="Shared")
    await pool.execute(
        "INSERT INTO campaign_items (campaign_id, contact_id, email)"
        " SELECT DISTINCT ON (lower(email)) $1, id, email FROM contacts"
        " WHERE email LIKE 'user%@shared.example.test' ORDER BY lower(email), id",
        campaign_id,
    )
    ended, running = KeptCounts(3600), KeptCounts(3600)

    def mine(listed: list[dict[str, object]], wanted: int) -> dict[str, object]:
        return next(c for c in listed if c["id"] == wanted)

    first = mine(await campaign_progress(pool, 50, ended, running), campaign_id)
    assert first["counts"] == {"pending": 3}
    await pool.execute(
        "UPDATE campaign_items SET status = 'skipped' WHERE campaign_id = $1", campaign_id
    )
    await pool.execute("UPDATE campaigns SET name = 'Shared, renamed' WHERE id = $1", campaign_id)
    newer = await make_campaign(pool, audience, name="Shared, newer")
    listed = await campaign_progress(pool, 50, ended, running)
    again = mine(listed, campaign_id)
    assert again["counts"] == {"pending": 3} and again["counted_at_ms"] == first["counted_at_ms"]
    assert again["name"] == "Shared, renamed"
    assert mine(listed, newer)["counts"] == {}
    fresh = mine(await campaign_progress(pool, 50), campaign_id)
    assert fresh["counts"] == {"skipped": 3}
