"""One image, many targets: services in separate processes, replicas, health endpoints."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx
import pytest
from mailroom_common.db import quote_ident
from mailroom_common.events import CampaignLaunch
from mailroom_common.migrate import migrate

from mailroom.campaigns import send_command
from tests.support.environment import POSTGRES_SERVER, Installation
from tests.support.scenario import campaign_reaches
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration


async def test_one_process_per_service_with_two_sender_replicas(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 1500)
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    for service in ("item_generator", "message_processor", "completion"):
        installation.start_services(service, log_name=service)
    senders = [
        installation.start_services("outbound_sender", log_name=f"sender{i}") for i in range(2)
    ]

    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)

    assert status["counts"] == {"sent": 1500}
    recipients = smtp_server.handler.recipients()
    assert set(recipients) == audience.eligible and max(recipients.values()) == 1
    for sender in senders:
        port = sender.ops_port  # type: ignore[attr-defined]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        sent_line = next(
            line
            for line in metrics.splitlines()
            if line.startswith('mailroom_deliveries_total{kind="campaign",status="sent"}')
        )
        print(f"\nsender replica: {sent_line}")
        assert float(sent_line.split()[-1]) > 0, "both replicas should have taken batches"


async def test_health_readiness_and_metrics_endpoints(installation: Installation) -> None:
    process = installation.start_services("completion")
    base = f"http://127.0.0.1:{process.ops_port}"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["services"] == ["completion"]
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {
            "ready": True,
            "problems": {},
            "services": {"completion": {"ready": True, "problems": {}}},
        }
        assert (await client.get("/readyz/completion")).status_code == 200
        assert (await client.get("/readyz/subscriptions")).status_code == 404
        metrics = await client.get("/metrics")
        assert 'mailroom_service_up{service="completion"} 1.0' in metrics.text
        # completion has no public pages: nothing listens on MAILROOM_HTTP_PORT
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{process.http_port}/healthz")  # type: ignore[attr-defined]


async def test_migrations_are_safe_when_replicas_start_together() -> None:
    """Four `mailroom migrate --create-database` at once on a database that does not exist."""
    database = f"mailroom_test_migrate_{uuid.uuid4().hex[:8]}"
    url = f"{POSTGRES_SERVER}/{database}"
    try:
        results = await asyncio.gather(*(migrate(url, create_database=True) for _ in range(4)))
        applied = [versions for versions in results if versions]
        assert len(applied) == 1, f"one replica applies the schema, the others wait: {results}"
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied[0])
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres")
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
        await admin.close()


async def test_json_log_lines_carry_the_campaign_and_message(smtp_server: SmtpServer) -> None:
    install = Installation(log_format="json")
    pool = await install.setup()
    try:
        audience = await make_audience(pool, 20)
        await use_smtp_server(pool, smtp_server.port)
        campaign_id = await make_campaign(pool, audience)
        install.start_services(
            "item_generator", "message_processor", "outbound_sender", "completion"
        )
        await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
        await campaign_reaches(install, campaign_id)
        lines = [json.loads(line) for line in install.log_text().splitlines() if line.strip()]
        launched = next(
            line for line in lines if line["message"].startswith(f"campaign {campaign_id} launched")
        )
        assert launched["level"] == "info" and launched["campaign_id"] == campaign_id
        assert launched["message_id"] and launched["queue"].endswith(".item_generator.commands")
        assert not any("@" in line["message"] for line in lines if line["level"] == "info")
        # every line about the campaign carries its id, from a consumer's message or from a
        # periodic sweep (generation of a due campaign, the completion sweep) alike
        about = [line for line in lines if f"campaign {campaign_id}" in line["message"]]
        assert any("generat" in line["message"] for line in about), about
        assert any("completed" in line["message"] for line in about), about
        assert [line for line in about if line.get("campaign_id") != campaign_id] == []
    finally:
        await install.teardown()
