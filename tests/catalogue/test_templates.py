"""Bad templates and footers, against the real services in one process (config, item
generator, message processor, sender, completion), PostgreSQL, RabbitMQ and an SMTP server.

A campaign template is tried twice: as `mailroom campaign create` would take it (refused with
the reason), and stored as is and launched (the campaign fails with the same reason, a
marketer can act on). A footer is tried through the admin API (422 naming the footer) and,
for the unsubscribe link, also stored as is (every campaign then fails, no email goes out).
While each attempt runs, /healthz keeps answering: rendering never stalls the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from mailroom_common.events import CampaignLaunch
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore

from mailroom.campaigns import CampaignProblem, NewCampaign, create_campaign, send_command
from tests.catalogue.cases import Case, case_ids
from tests.support.environment import Installation
from tests.support.scenario import campaign_reaches, pool_of, received_count
from tests.support.seed import HTML, TEXT, Audience, make_audience, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

TOKEN = "catalogue-templates-token-52b7e1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECIPIENTS = 3
T = TypeVar("T")

NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
SAMPLE_ONLY = (
    "{% if contact.email == 'sample.contact@example.com' %}{{ unsubscribe_url }}{% endif %}"
)


@dataclass(frozen=True)
class Template:
    """A campaign whose html (or subject) is hostile; `reason` is in the failure reason."""

    html: str = HTML
    subject: str = "News for {{ contact.first_name }}"
    reason: str = ""  # "" means: accepted, and sent to every recipient
    refused_at_create: bool = True  # False: the trial render with a sample contact passes


@dataclass(frozen=True)
class Footer:
    """A marketing footer the admin API must refuse (422 naming `field`, saying `reason`)."""

    field: str
    value: str
    reason: str
    stored_reason: str = ""  # also stored as is: every campaign fails saying this


CASES: list[Case] = [
    Case(
        "templates-01",
        "footer link only for the sample contact of the trial render",
        "422 naming text_footer; stored anyway, the campaign fails and nothing is sent",
    ),
    Case("templates-02", "html footer link inside a {% for %} loop", "422 naming html_footer"),
    Case("templates-03", "footer link only in a Jinja comment", "422 naming text_footer"),
    Case("templates-04", "html footer link inside an HTML comment", "422 naming html_footer"),
    Case("templates-05", "footer that reassigns unsubscribe_url", "422 naming text_footer"),
    Case(
        "templates-06",
        "footer with a nested range(100000) loop",
        "422 (over a rendering limit, 1 s), /healthz answers meanwhile",
    ),
    Case("templates-07", "footer with 'x'.ljust(10**8)", "422 naming html_footer"),
    Case(
        "templates-08",
        "template with a nested range(100000) loop",
        "campaign failed: rendering took longer than 1 s; /healthz answers meanwhile",
    ),
    Case("templates-09", "template with 'x'.ljust(10**8)", "campaign failed: ljust() limit"),
    Case("templates-10", "template with 'x' * 10**9", "campaign failed: repeating a value"),
    Case("templates-11", "template with '%*s' % (10**8, 'x')", "campaign failed: '*' width"),
    Case("templates-12", "template with '{:>100000000}'.format(1)", "campaign failed"),
    Case("templates-13", "string doubled 40 times with ~ in a loop", "campaign failed: size"),
    Case("templates-14", "a loop printing 100 MB", "campaign failed: output over 2,000,000"),
    Case("templates-15", "subject with {{ ''.__class__.__mro__ }}", "campaign failed: not allowed"),
    Case("templates-16", "broken syntax ({% if %} never closed)", "campaign failed, line named"),
    Case("templates-17", "a 10 MB template", "campaign failed: at most 1,000,000 characters"),
    Case("templates-18", "an undefined merge field", "accepted: renders empty, every email sent"),
    Case("templates-19", "a block capturing 100,000 copies of a value", "campaign failed: size"),
    Case(
        "templates-20",
        "a huge loop only for real contacts (the trial render's sample contact skips it)",
        "campaign failed after 3 recipients hit the time limit; nothing sent",
    ),
]

ATTEMPTS: dict[str, Template | Footer] = {
    "templates-01": Footer(
        "text_footer",
        SAMPLE_ONLY,
        "must contain the unsubscribe link",
        stored_reason="text footer: must contain the unsubscribe link",
    ),
    "templates-02": Footer(
        "html_footer",
        '{% for x in [1] %}<a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endfor %}',
        "must contain the unsubscribe link",
    ),
    "templates-03": Footer(
        "text_footer", "Bye {# {{ unsubscribe_url }} #}", "must contain the unsubscribe link"
    ),
    "templates-04": Footer(
        "html_footer",
        '<!-- <a href="{{ unsubscribe_url }}">Unsubscribe</a> -->',
        "must contain the unsubscribe link",
    ),
    "templates-05": Footer(
        "text_footer",
        "{% set unsubscribe_url = 'https://evil.example/' %}{{ unsubscribe_url }}",
        "must not assign to unsubscribe_url",
    ),
    "templates-06": Footer(
        "html_footer",
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>' + NESTED_LOOP,
        "rendering took longer than 1 s",
    ),
    "templates-07": Footer(
        "html_footer",
        "{{ 'x'.ljust(10**8) }}<a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
        "ljust() would be 100,000,000 characters",
    ),
    "templates-08": Template(
        html=f"<p>{NESTED_LOOP}</p>", reason="html: over a rendering limit: rendering took"
    ),
    "templates-09": Template(
        html="<p>{{ 'x'.ljust(10**8) }}</p>", reason="html, line 1: over a rendering limit"
    ),
    "templates-10": Template(html="<p>{{ 'x' * 10**9 }}</p>", reason="repeating a value"),
    "templates-11": Template(html="<p>{{ '%*s' % (10**8, 'x') }}</p>", reason="'*' width"),
    "templates-12": Template(
        html="<p>{{ '{:>100000000}'.format(1) }}</p>", reason="a format field would be"
    ),
    "templates-13": Template(
        html="{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}<p>{{ ns.s }}</p>",
        reason="a value would be",
    ),
    "templates-14": Template(
        html="<p>{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}</p>",
        reason="renders to more than 2,000,000 characters",
    ),
    "templates-15": Template(
        subject="{{ ''.__class__.__mro__ }}", reason="subject, line 1: '__mro__' is not allowed"
    ),
    "templates-16": Template(html="<p>\n{% if contact.vip %}never closed</p>", reason="html, line"),
    "templates-17": Template(html="<p>" + "x" * 10_000_000 + "</p>", reason="at most 1,000,000"),
    "templates-18": Template(html="<p>Hello {{ contact.no_such_field }}!</p>"),
    "templates-19": Template(
        html="{% set s %}{% for i in range(100000) %}{{ 'z' * 1000 }}{% endfor %}{% endset %}"
        "<p>{{ s }}</p>",
        reason="a block would be",
    ),
    "templates-20": Template(
        html="{% if contact.email != 'sample.contact@example.com' %}" + NESTED_LOOP + "{% endif %}",
        reason="the template hit a rendering limit for 3 recipients",
        refused_at_create=False,
    ),
}


@dataclass
class Stage:
    install: Installation
    base: str
    ops_base: str  # /healthz
    audience: Audience
    smtp: SmtpServer


@pytest.fixture(scope="module")
async def stage() -> AsyncIterator[Stage]:
    install = Installation(admin_token=TOKEN)
    pool = await install.setup()
    try:
        with SmtpServer() as smtp:
            audience = await make_audience(pool, RECIPIENTS, tag="catalogue")
            await use_smtp_server(pool, smtp.port)
            process = install.start_services(
                "config",
                "item_generator",
                "message_processor",
                "outbound_sender",
                "completion",
                log_name="templates",
            )
            base = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
            ops_base = f"http://127.0.0.1:{process.ops_port}"  # type: ignore[attr-defined]
            yield Stage(install, base, ops_base, audience, smtp)
    finally:
        await install.teardown()


async def while_healthy(base: str, work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """`work()`, with /healthz asked every 0.2 s meanwhile; fails unless every ask answered
    200. Returns the work's result and how many times /healthz answered."""
    answered = 0
    done = asyncio.Event()

    async def ask() -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            while not done.is_set():
                answer = await client.get("/healthz")
                assert answer.status_code == 200, answer.text
                answered += 1
                await asyncio.sleep(0.2)

    asker = asyncio.create_task(ask())
    try:
        result = await work()
    finally:
        done.set()
        await asker  # re-raises a /healthz failure
    return result, answered


def _campaign(name: str, template: Template, audience: Audience) -> NewCampaign:
    return NewCampaign(
        name=name,
        subject=template.subject,
        from_email="news@mailroom.test",
        from_name="Mailroom News",
        html_template=template.html,
        text_template=TEXT if template.html == HTML else None,
        lists=audience.list_names,
    )


async def _store_and_launch(stage: Stage, campaign: NewCampaign) -> dict[str, Any]:
    """The campaign stored as is (as an older version or another client could have), then
    launched; returns its final status."""
    pool = pool_of(stage.install)
    async with pool.acquire() as conn, conn.transaction():
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_name, from_email, html_template,"
            " text_template) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            campaign.name,
            campaign.subject,
            campaign.from_name,
            campaign.from_email,
            campaign.html_template,
            campaign.text_template,
        )
        await conn.execute(
            "INSERT INTO campaign_lists (campaign_id, list_id)"
            " SELECT $1, id FROM lists WHERE name = ANY($2)",
            campaign_id,
            campaign.lists,
        )
    await send_command(stage.install.settings, CampaignLaunch(campaign_id=campaign_id))
    return await campaign_reaches(stage.install, campaign_id, limit=120)


async def _try_template(stage: Stage, case: Case, template: Template) -> None:
    pool = pool_of(stage.install)
    campaign = _campaign(f"catalogue {case.id}", template, stage.audience)
    if template.reason and template.refused_at_create:  # as `mailroom campaign create` would
        with pytest.raises(CampaignProblem) as refused:
            await create_campaign(pool, campaign, stage.install.settings)
        assert template.reason in str(refused.value)
    sent_before = received_count(stage.smtp)
    final, answered = await while_healthy(
        stage.ops_base, lambda: _store_and_launch(stage, campaign)
    )
    assert answered >= 1
    if template.reason:
        assert final["status"] == "failed", final
        assert template.reason in (final["failure_reason"] or ""), final
        assert received_count(stage.smtp) == sent_before  # nothing went out
    else:
        assert final["status"] == "completed", final
        assert final["counts"].get("sent") == len(stage.audience.eligible), final


async def _try_footer(stage: Stage, case: Case, footer: Footer) -> None:
    async with httpx.AsyncClient(base_url=stage.base, headers=AUTH, timeout=60) as client:
        before = (await client.get("/settings/marketing")).json()["version"]
        started = time.monotonic()
        answer, answered = await while_healthy(
            stage.ops_base,
            lambda: client.put("/settings/marketing", json={footer.field: footer.value}),
        )
        assert answer.status_code == 422, answer.text
        problems = answer.json()["detail"]
        named = [p for p in problems if p["field"] == footer.field]
        assert named and footer.reason in named[0]["problem"], problems
        assert (await client.get("/settings/marketing")).json()["version"] == before
        if time.monotonic() - started > 0.5:  # a slow refusal: health was asked meanwhile
            assert answered >= 1
    if footer.stored_reason:
        await _stored_footer_fails_every_campaign(stage, case, footer)


async def _stored_footer_fails_every_campaign(stage: Stage, case: Case, footer: Footer) -> None:
    """A bad footer already in the database (written before this check existed): every
    campaign fails with the reason, and no email goes out without its unsubscribe link."""
    store = SettingsStore(pool_of(stage.install), stage.install.settings.settings_key)
    values = {**MarketingSettings().model_dump(), footer.field: footer.value}
    bad = MarketingSettings.model_construct(**values)  # not validated: as stored long ago
    await store.save(bad, changed_by="catalogue")
    try:
        sent_before = received_count(stage.smtp)
        campaign = _campaign(f"catalogue {case.id} stored", Template(), stage.audience)
        final, _ = await while_healthy(stage.ops_base, lambda: _store_and_launch(stage, campaign))
        assert final["status"] == "failed", final
        assert footer.stored_reason in (final["failure_reason"] or ""), final
        assert received_count(stage.smtp) == sent_before
    finally:
        await store.save(MarketingSettings(), changed_by="catalogue")


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_templates(stage: Stage, case: Case) -> None:
    attempt = ATTEMPTS[case.id]
    if isinstance(attempt, Footer):
        await _try_footer(stage, case, attempt)
    else:
        await _try_template(stage, case, attempt)
