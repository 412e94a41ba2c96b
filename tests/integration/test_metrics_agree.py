"""Every service's /metrics agrees with the database after a campaign run end to end, each
service in a process of its own (as in Kubernetes): what an SRE's dashboard shows is what
happened."""

from __future__ import annotations

import subprocess
from collections import defaultdict

import httpx
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import CampaignLaunch
from prometheus_client.parser import text_string_to_metric_families

from mailroom.campaigns import send_command
from tests.support.environment import Installation, wait_for
from tests.support.scenario import campaign_reaches, items_in, pool_of
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

SERVICES = ("item_generator", "message_processor", "outbound_sender", "completion")

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(process: subprocess.Popen[bytes]) -> Samples:
    samples: Samples = defaultdict(dict)
    text = httpx.get(Installation.metrics_url(process), timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_each_services_metrics_agree_with_the_database(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 400, tag="metrics")
    refused = sorted(audience.eligible)[:7]
    smtp_server.handler.hard_fail.update(refused)
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    processes = {name: installation.start_services(name, log_name=name) for name in SERVICES}
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed", status
    sent = await items_in(pool, campaign_id, "sent")
    failed = await items_in(pool, campaign_id, "failed")
    assert (sent, failed) == (400 - 7, 7)

    generator = scrape(processes["item_generator"])
    assert value(generator, "mailroom_items_generated_total") == status["items"] == 400

    processor = scrape(processes["message_processor"])
    assert value(processor, "mailroom_emails_rendered_total", kind="campaign") == 400
    assert value(processor, "mailroom_render_failures_total", scope="recipient") == 0

    sender = scrape(processes["outbound_sender"])
    assert value(sender, "mailroom_deliveries_total", kind="campaign", status="sent") == sent
    assert value(sender, "mailroom_deliveries_total", kind="campaign", status="failed") == failed
    assert value(sender, "mailroom_smtp_replies_total", **{"class": "2xx"}) == sent
    assert value(sender, "mailroom_smtp_replies_total", **{"class": "5xx"}) == failed
    for outcome, n in (("sent", sent), ("failed", failed)):
        assert value(sender, "mailroom_smtp_send_seconds_count", outcome=outcome) == n
    # every batch's age was measured where it was consumed
    queue = Topology.from_settings(installation.settings).outbound_batches.name
    batches = value(sender, "mailroom_queue_message_age_seconds_count", queue=queue)
    assert batches >= 400 / installation.settings.batch_size
    assert sum(sender.get("mailroom_dead_letters_total", {}).values()) == 0

    async def counted() -> bool:
        completion = scrape(processes["completion"])
        return (
            value(completion, "mailroom_campaigns_finished_total", status="completed") == 1
            and all(v == 0 for v in completion.get("mailroom_campaign_items", {}).values())
            and bool(completion.get("mailroom_campaign_items"))
        )

    # the campaign ended: no item of a running campaign is left in the gauge
    await wait_for(counted, 30, "completion's metrics to show the campaign finished")
    # FastStream's broker-side metrics are served beside ours
    assert any(name.startswith("faststream_") for name in sender)
