"""The test that plays the CRM through the broker: a campaign created by command
(campaign.create), 10,000 contacts upserted in batches (contact.upserted), the launch
(campaign.launch), and the contact.activity timeline heard on the CRM's own queue: one entry
per recipient, each with the CRM's contact id and the campaign id. Then a second campaign (the
first archived by the CLI), and 100 people erased (contact.erased, answered by
contact.erased.done):
their addresses, names and merge fields are then in no column of any table, the campaigns'
counts are what they were, and an erased address that was suppressed stays suppressed when
it comes back (CSV import, contact.upserted)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from mailroom_common.events import Activity

from tests.support.autoresponders import make_autoresponder, make_list
from tests.support.cli import run_mailroom
from tests.support.crm import Crm, campaign_create, columns_holding, crm
from tests.support.environment import Installation, wait_for
from tests.support.scenario import campaign_reaches, pool_of
from tests.support.seed import use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

PEOPLE = 10_000
BATCH = 1_000
ERASED = 100
REJECTED = 10  # of the erased: refused at RCPT during the first campaign, so suppressed
VIP = 200  # the second campaign's list: the first VIP people


def address(i: int) -> str:
    return f"person{i:05d}@crm.example.com"


def contact(i: int) -> dict[str, Any]:
    lists = {"crm-news": "subscribed"}
    if i < VIP:
        lists["crm-vip"] = "subscribed"
    return {
        "crm_id": f"crm-{i}",
        "email": address(i),
        "first_name": f"Qwyn{i:05d}x",
        "last_name": "Doe",
        "attributes": {"member_code": f"MC{i:05d}Z"},
        "lists": lists,
    }


def traces(i: int) -> list[str]:
    """What identifies person i: address, name, merge field."""
    return [address(i), f"Qwyn{i:05d}x", f"MC{i:05d}Z"]


async def _upsert_everyone(client: Crm) -> None:
    for start in range(0, PEOPLE, BATCH):
        body = {
            "correlation_id": f"batch-{start}",
            "contacts": [contact(i) for i in range(start, start + BATCH)],
        }
        await client.publish("contact.upserted", body)
    created = 0
    for start in range(0, PEOPLE, BATCH):
        done = await client.answer("contact.upserted.done", f"batch-{start}", limit=120)
        assert done["failed"] == []
        created += done["created"]
    assert created == PEOPLE


async def _create(client: Crm, name: str, lists: list[str]) -> int:
    """A campaign created by command, as the CRM creates one; its id from the answer."""
    body = campaign_create(
        name=name,
        subject="News for {{ contact.first_name }}",
        lists=lists,
        correlation_id=f"create-{name}",
        idempotency_key=f"crm-campaign-{name}",
    )
    await client.command("campaign.create", body)
    created = await client.answer("campaign.created", f"create-{name}")
    assert created["replayed"] is False
    return int(created["campaign_id"])


async def _launch(
    install: Installation, client: Crm, campaign_id: int
) -> tuple[dict[str, Any], list[Activity]]:
    """Launched by command, completed, and its timeline: one entry (sent, failed or
    bounced) for each email that got its final SMTP answer."""
    await client.command("campaign.launch", {"campaign_id": campaign_id})
    status = await campaign_reaches(install, campaign_id, "completed", limit=300)
    answered = status["counts"].get("sent", 0) + status["counts"].get("failed", 0)
    told = await client.timeline.until(None, answered, campaign_id=campaign_id)
    assert len(told) == len({e.item_id for e in told}) == answered, "one entry per recipient"
    return status, told


async def _send(
    install: Installation, client: Crm, name: str, lists: list[str]
) -> tuple[dict[str, Any], list[Activity]]:
    return await _launch(install, client, await _create(client, name, lists))


async def _leave_bounce_traces(install: Installation) -> None:
    """What the bounce mailbox leaves: a bounce whose returned headers name person 20, and
    a message it could not parse that holds person 21's address."""
    pool = pool_of(install)
    for n, (outcome, i) in enumerate((("bounce", 20), ("unparsed", 21))):
        raw = f"To: <{address(i).upper()}>\r\n\r\nbounce {n}".encode()
        digest = hashlib.sha256(raw).hexdigest()
        await pool.execute(
            "INSERT INTO processed_messages (digest, outcome, size) VALUES ($1, $2, $3)",
            digest,
            outcome,
            len(raw),
        )
        if outcome == "bounce":
            await pool.execute(
                "INSERT INTO bounces (email, kind, action, status, diagnostic, digest, headers)"
                " VALUES ($1, 'soft', 'delayed', '4.2.2', $2, $3, $4::jsonb)",
                address(i),
                f"452 4.2.2 <{address(i)}> mailbox full",
                digest,
                {"To": address(i)},
            )
        else:
            await pool.execute(
                "INSERT INTO unparsed_messages (digest, size, head, headers, reason)"
                " VALUES ($1, $2, $3, $4::jsonb, 'no report')",
                digest,
                len(raw),
                raw,
                {"To": address(i).upper()},
            )


async def test_the_crm_hears_of_everyone_and_erased_people_are_nowhere(
    installation: Installation, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    pool = pool_of(installation)
    for i in range(REJECTED):
        smtp_server.handler.rcpt_replies[address(i)] = (
            f"550 5.1.1 <{address(i)}>: Recipient address rejected"
        )
    await use_smtp_server(pool, smtp_server.port)
    await make_list(pool, "crm-news")  # the CRM's batches would create it, but not before this
    await make_autoresponder(installation, "Welcome", list_name="crm-news", delay_seconds=86400)
    installation.start_services()

    async with crm(installation) as client:
        news_id = await _create(client, "News", ["crm-news"])
        await _upsert_everyone(client)

        async def welcomed() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM autoresponder_items")
            return bool(count == PEOPLE)

        await wait_for(welcomed, 120, "an autoresponder item per new membership")

        news, told = await _launch(installation, client, news_id)
        assert news["counts"] == {"sent": PEOPLE - REJECTED, "failed": REJECTED}
        # the timeline: everyone once, by the CRM's id, sent (or refused at RCPT: a hard bounce)
        assert len(told) == PEOPLE
        assert {e.crm_contact_id: (e.email.lower(), e.kind) for e in told} == {
            f"crm-{i}": (address(i), "bounced" if i < REJECTED else "sent") for i in range(PEOPLE)
        }
        assert {e.campaign_id for e in told} == {news_id}
        assert {e.bounce_kind for e in told if e.kind == "bounced"} == {"hard"}
        archived = await run_mailroom(
            installation.env, "campaign", "archive", str(news["id"]), "--json"
        )
        assert archived.returncode == 0, archived.stderr
        vip, _ = await _send(installation, client, "VIP", ["crm-vip"])
        assert vip["counts"] == {"sent": VIP - REJECTED}  # the rejected are suppressed now
        await _leave_bounce_traces(installation)
        everyone = list(range(ERASED))
        assert await columns_holding(pool, [t for i in everyone for t in traces(i)])

        # by crm_id; the second message also by address (upper case: any case matches)
        await client.publish(
            "contact.erased",
            {"correlation_id": "erase-1", "crm_ids": [f"crm-{i}" for i in range(60)]},
        )
        await client.publish(
            "contact.erased",
            {
                "correlation_id": "erase-2",
                "crm_ids": [f"crm-{i}" for i in range(60, ERASED - 1)],
                "emails": [address(ERASED - 1).upper()],
            },
        )
        first = await client.answer("contact.erased.done", "erase-1")
        second = await client.answer("contact.erased.done", "erase-2")
        assert (first["contacts"], second["contacts"]) == (60, 40)
        assert first["suppressions_hashed"] == REJECTED
        # each person: an archived item (News), an item (VIP, but for the suppressed), an
        # autoresponder item
        assert first["items"] + second["items"] == 3 * ERASED - REJECTED
        assert first["bounces"] == REJECTED + 1  # refused at RCPT, and person 20's

        # the every-column scan: nothing of them anywhere; someone else is still found
        assert await columns_holding(pool, [t for i in everyone for t in traces(i)]) == {}
        assert set(await columns_holding(pool, traces(ERASED))) == {
            "archived_items.email",
            "autoresponder_items.email",
            "campaign_items.email",
            "contacts.attributes",
            "contacts.email",
            "contacts.first_name",
        }
        for campaign in (news, vip):
            after = await campaign_reaches(installation, campaign["id"], "completed")
            assert after["counts"] == campaign["counts"]

        # delivered again: done again, nothing more
        await client.publish(
            "contact.erased",
            {"correlation_id": "erase-1-again", "crm_ids": [f"crm-{i}" for i in range(60)]},
        )
        again = await client.answer("contact.erased.done", "erase-1-again")
        assert (again["contacts"], again["items"], again["unknown_crm_ids"]) == (0, 0, [])

        # they come back: by CSV (0-4, and 50, who was never suppressed) and by the CRM
        # under new ids (5-9)
        smtp_server.handler.rcpt_replies.clear()
        people = tmp_path / "again.csv"
        lines = [f"{address(i)},Back,Again" for i in (0, 1, 2, 3, 4, 50)]
        people.write_text("email,first_name,last_name\n" + "\n".join(lines) + "\n")
        imported = await run_mailroom(
            installation.env, "contacts", "import", people, "--list", "crm-again", "--json"
        )
        assert imported.returncode == 0, imported.stderr
        back = [
            {"crm_id": f"new-{i}", "email": address(i), "lists": {"crm-again": "subscribed"}}
            for i in range(5, REJECTED)
        ]
        await client.publish("contact.upserted", {"correlation_id": "back", "contacts": back})
        assert (await client.answer("contact.upserted.done", "back"))["created"] == 5

        again_campaign, again_told = await _send(installation, client, "Again", ["crm-again"])
        assert again_campaign["counts"] == {"sent": 1}
        assert [(e.email.lower(), e.crm_contact_id) for e in again_told] == [(address(50), None)]
        # nothing was told twice, nor about anyone else
        assert len(client.timeline.entries()) == PEOPLE + VIP - REJECTED + 1
    sent_to = await pool.fetchval(
        "SELECT array_agg(email) FROM campaign_items WHERE campaign_id = $1", again_campaign["id"]
    )
    assert sent_to == [address(50)]
    suppressed = await pool.fetchval(
        "SELECT count(*) FROM suppressions WHERE email = ANY($1::text[])",
        [address(i) for i in range(REJECTED)],
    )
    assert suppressed == REJECTED
