"""Contacts by events from the CRM (contact.upserted, contact.erased), each rule on a few
contacts, against the subscriptions service with a real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from mailroom_bounce_processor.matching import analyse
from mailroom_bounce_processor.records import Recorder
from mailroom_common.events import MAX_UPSERTED_CONTACTS
from mailroom_common.runtime_settings import BounceMailbox
from mailroom_common.signing import Signer

from tests.support.autoresponders import make_autoresponder, make_contact, make_list
from tests.support.bounce_messages import dsn
from tests.support.cli import run_mailroom
from tests.support.crm import Crm, columns_holding, crm
from tests.support.environment import Installation, wait_for
from tests.support.scenario import pool_of

pytestmark = pytest.mark.integration


def person(crm_id: str, email: str, **fields: object) -> dict[str, object]:
    return {"crm_id": crm_id, "email": email, **fields}


async def upsert(client: Crm, correlation_id: str, *contacts: dict[str, object]) -> dict[str, Any]:
    await client.publish(
        "contact.upserted", {"correlation_id": correlation_id, "contacts": list(contacts)}
    )
    return await client.answer("contact.upserted.done", correlation_id)


async def membership(pool: asyncpg.Pool, crm_id: str, list_name: str) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT m.status FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " JOIN lists l ON l.id = m.list_id WHERE c.crm_id = $1 AND l.name = $2",
        crm_id,
        list_name,
    )
    return status


async def test_upsert_creates_updates_and_never_resubscribes(installation: Installation) -> None:
    pool = pool_of(installation)
    news = await make_list(pool, "news")
    # a contact of a CSV import (no crm_id) and one who unsubscribed through Mailroom
    imported = await make_contact(pool, "Old@Example.com", news)
    await make_contact(pool, "left@example.com", news, status="unsubscribed")
    await make_autoresponder(installation, "Welcome", list_name="news", delay_seconds=3600)
    installation.start_services("subscriptions", "autoresponder")

    async with crm(installation) as client:
        done = await upsert(
            client,
            "first",
            person(
                "c1",
                "ann@example.com",
                first_name="Ann",
                attributes={"city": "Oslo", "n": 3},
                lists={"news": "subscribed", "vip": "subscribed"},
            ),
            person("c2", "old@example.com", first_name="Olga", lists={"news": "subscribed"}),
            person("c3", "left@example.com", lists={"news": "subscribed"}),
            person("c4", "not-an-address", lists={"news": "subscribed"}),
            person("c5", "nul@example.com", last_name="Nu\u0000l"),
            person("c6", "first@example.com", first_name="First"),
            person("c6", "second@example.com", first_name="Second", extra_field="ignored"),
        )
        # c2 and c3 take the contacts of their addresses, which had no crm_id
        assert (done["created"], done["updated"]) == (2, 2)
        assert done["duplicates"] == 1
        # c1 joins news and vip; c2 was on news already, c3 left it
        assert (done["subscribed"], done["kept_unsubscribed"]) == (2, 1)
        failed = {f["crm_id"]: f["reason"] for f in done["failed"]}
        assert set(failed) == {"c4", "c5"}
        assert failed["c4"].startswith("email: ")
        assert "last_name" in failed["c5"] and "NUL" in failed["c5"]

        row = await pool.fetchrow("SELECT * FROM contacts WHERE crm_id = 'c2'")
        assert row is not None
        assert (row["id"], row["email"], row["first_name"]) == (imported, "old@example.com", "Olga")
        assert await pool.fetchval("SELECT email FROM contacts WHERE crm_id = 'c6'") == (
            "second@example.com"
        )
        # the unsubscribe through Mailroom wins over the CRM's "subscribed"
        assert await membership(pool, "c3", "news") == "unsubscribed"
        assert await membership(pool, "c1", "vip") == "subscribed"  # a new list, created

        # new memberships reach the autoresponder (contacts.subscribed)
        async def items() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM autoresponder_items")
            return bool(count == 1)  # c1's new membership of news

        await wait_for(items, 30, "autoresponder items of the new memberships")
        assert await pool.fetchval("SELECT count(*) FROM contact_announcements") == 0

        # the same batch again changes nothing; a null attribute removes it; the CRM may
        # unsubscribe, and its "subscribed" then does not undo it
        again = await upsert(
            client,
            "again",
            person("c1", "ann@example.com", attributes={"n": None}, lists={"vip": "unsubscribed"}),
        )
        assert (again["created"], again["updated"], again["unsubscribed"]) == (0, 1, 1)
        attributes = await pool.fetchval("SELECT attributes FROM contacts WHERE crm_id = 'c1'")
        assert attributes == {"city": "Oslo"}
        back = await upsert(
            client, "back", person("c1", "ann@example.com", lists={"vip": "subscribed"})
        )
        assert (back["subscribed"], back["kept_unsubscribed"]) == (0, 1)
        assert await membership(pool, "c1", "vip") == "unsubscribed"

    # a batch's announcement that never followed its commit (dead-lettered after it): the
    # job's sweep announces it (`mailroom jobs run` wakes it)
    await pool.execute(
        "INSERT INTO contact_announcements (batch, list_id, contact_id, event_id, created_at)"
        " SELECT 'lost', m.list_id, m.contact_id, 'left-over', now() - interval '2 minutes'"
        " FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " JOIN lists l ON l.id = m.list_id WHERE c.crm_id = 'c2' AND l.name = 'news'"
    )
    ran = await run_mailroom(installation.env, "jobs", "run", "sync-crm-contacts")
    assert ran.returncode == 0, ran.stderr

    async def announced() -> bool:
        left = await pool.fetchval("SELECT count(*) FROM contact_announcements")
        made = await pool.fetchval(
            "SELECT count(*) FROM autoresponder_items WHERE event_id = 'left-over'"
        )
        return bool(left == 0 and made == 1)

    await wait_for(announced, 30, "the left-over announcement")


async def test_bad_batches_are_dead_lettered_with_their_reason(installation: Installation) -> None:
    installation.start_services("subscriptions")
    async with crm(installation) as client:
        too_many = [
            person(f"c{i}", f"p{i}@example.com") for i in range(MAX_UPSERTED_CONTACTS * 100)
        ]
        await client.publish("contact.upserted", {"contacts": too_many})
        await client.publish(
            "contact.upserted", {"contacts": [{"crm_id": 7, "email": "a@example.com"}]}
        )
        await client.publish(
            "contact.upserted", {"contacts": [person("c1", "a@example.com", lists=["news"])]}
        )
        await client.publish("contact.erased", {"correlation_id": "nobody"})
        await client.publish("contact.erased", b"\xff not json")
        letters = await client.dead_letters(5)
    reasons = sorted(str(m.headers["x-mailroom-error"]) for m in letters)
    assert any(
        f"contacts: List should have at most {MAX_UPSERTED_CONTACTS} items" in r for r in reasons
    )
    assert any("contacts.0.crm_id: Input should be a valid string" in r for r in reasons)
    assert any("contacts.0.lists: Input should be an object" in r for r in reasons)
    assert any("names nobody: give crm_ids or emails" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    assert await pool_of(installation).fetchval("SELECT count(*) FROM contacts") == 0


async def test_erasure_removes_the_person_and_is_idempotent(installation: Installation) -> None:
    pool = pool_of(installation)
    installation.start_services("subscriptions")
    async with crm(installation) as client:
        await upsert(
            client,
            "people",
            person(
                "gone",
                "Gone.Person@Example.com",
                first_name="Zebulon",
                last_name="Quaxley",
                attributes={"note": "Zebulon's file"},
                lists={"news": "subscribed"},
            ),
            person("kept", "kept@example.com", first_name="Kept", lists={"news": "subscribed"}),
        )
        await pool.execute(
            "INSERT INTO suppressions (email, reason, detail)"
            " VALUES ('gone.person@example.com', 'hard_bounce',"
            " '550 <Gone.Person@Example.com> unknown')"
        )
        # an email was sent to them
        campaign = await pool.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, html_template)"
            " VALUES ('c', 's', 'news@example.com', 'h') RETURNING id"
        )
        item = await pool.fetchval(
            "INSERT INTO campaign_items (campaign_id, contact_id, email, status, smtp_reply)"
            " SELECT $1, id, email, 'sent', '250 ok <' || email || '>' FROM contacts"
            " WHERE crm_id = 'gone' RETURNING id",
            campaign,
        )
        await client.publish(
            "contact.erased", {"correlation_id": "e1", "crm_ids": ["gone", "never-known"]}
        )
        done = await client.answer("contact.erased.done", "e1")
        assert done["unknown_crm_ids"] == ["never-known"]
        assert (done["contacts"], done["suppressions_hashed"]) == (1, 1)
        assert await columns_holding(pool, ["gone.person@example.com", "Zebulon", "Quaxley"]) == {}
        status = await pool.fetchval("SELECT status FROM campaign_items WHERE id = $1", item)
        assert status == "sent"  # the counts stay

        # a bounce of that email comes late: signed, about an erased person: nothing is kept
        signer = Signer(installation.settings.signing_key.get_secret_value().encode())
        verp = signer.verp_address(str(item), installation.settings.bounce_domain)
        late_bounce = dsn(verp, "Gone.Person@Example.com")
        outcome = await Recorder(pool, signer).record(
            late_bounce, analyse(late_bounce), BounceMailbox()
        )
        assert outcome.events == ()
        assert await columns_holding(pool, ["gone.person@example.com"]) == {}
        # an unproven one (no VERP address of ours) is recorded, but by the address's hash
        unsigned = dsn("bounces@mailroom.test", "Gone.Person@Example.com")
        await Recorder(pool, signer).record(unsigned, analyse(unsigned), BounceMailbox())
        assert await columns_holding(pool, ["gone.person@example.com"]) == {}
        recorded = await pool.fetchrow("SELECT email, diagnostic, matched_by FROM bounces")
        assert recorded is not None and recorded["matched_by"] is None
        assert recorded["email"].startswith("sha256:") and recorded["diagnostic"] is None
        assert await columns_holding(pool, ["kept@example.com"]) == {"contacts.email": 1}
        assert await pool.fetchval(
            "SELECT email = mailroom_address_hash('GONE.person@example.com') FROM suppressions"
        )

        # delivered again: done again, nothing more to erase; an unknown id alone is done too
        await client.publish("contact.erased", {"correlation_id": "e2", "crm_ids": ["gone"]})
        assert (await client.answer("contact.erased.done", "e2"))["contacts"] == 0
        await client.publish("contact.erased", {"correlation_id": "e3", "crm_ids": ["nobody"]})
        assert (await client.answer("contact.erased.done", "e3"))["unknown_crm_ids"] == ["nobody"]

        # a late upsert of the erased id is refused; the address under a new id is
        # suppressed again, in plain form
        late = await upsert(client, "late", person("gone", "gone.person@example.com"))
        assert [f["crm_id"] for f in late["failed"]] == ["gone"]
        new = await upsert(
            client, "new", person("gone-2", "gone.person@example.com", lists={"news": "subscribed"})
        )
        assert new["created"] == 1
        assert (
            await pool.fetchval(
                "SELECT reason FROM suppressions WHERE email = 'gone.person@example.com'"
            )
            == "hard_bounce"
        )
        assert await pool.fetchval("SELECT count(*) FROM suppressions") == 1
    assert json.dumps(done)  # the answer is plain JSON for the CRM
