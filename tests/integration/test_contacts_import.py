"""`mailroom contacts import` at scale: batch announcements reach the autoresponder, a dry
run writes nothing, duplicates keep the last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mailroom_common.broker import Topology

from mailroom.contacts_import import ANNOUNCE_BATCH
from tests.support.autoresponders import make_autoresponder, make_contact, make_list
from tests.support.cli import run_mailroom
from tests.support.environment import Installation, wait_for
from tests.support.queues import queue_depth as _waiting_messages
from tests.support.scenario import pool_of

pytestmark = pytest.mark.integration

CONTACTS = 2 * ANNOUNCE_BATCH + 500


def _people(path: Path, count: int, start: int = 0) -> Path:
    lines = [f"reader{i}@example.com,Reader{i},R,Oslo" for i in range(start, start + count)]
    path.write_text("email,first_name,last_name,city\n" + "\n".join(lines) + "\n")
    return path


async def test_new_memberships_reach_the_autoresponder_in_batches(
    installation: Installation, tmp_path: Path
) -> None:
    pool = pool_of(installation)
    welcome = await make_list(pool, "welcome")
    autoresponder = await make_autoresponder(
        installation, "Welcome", list_name="welcome", delay_seconds=3600
    )
    await make_contact(pool, "reader0@example.com", welcome)  # on the list already
    people = _people(tmp_path / "people.csv", CONTACTS)

    result = await run_mailroom(
        installation.env, "contacts", "import", people, "--list", "welcome", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["created"], report["updated"], report["subscribed"]) == (
        CONTACTS - 1,
        1,
        CONTACTS - 1,
    )
    # one broker message per ANNOUNCE_BATCH new memberships, not one per contact
    queue = Topology.from_settings(installation.settings).autoresponder_triggers.name
    assert await _waiting_messages(queue) == 3

    installation.start_services("autoresponder")

    async def all_items() -> bool:
        count = await pool.fetchval("SELECT count(*) FROM autoresponder_items")
        return bool(count == CONTACTS - 1)

    await wait_for(all_items, 60, "an item for every new membership")
    items = await pool.fetch(
        "SELECT i.autoresponder_id, i.event_id, i.email, m.list_id, i.status,"
        " i.due_at > now() + interval '50 minutes' AS later"
        " FROM autoresponder_items i JOIN list_memberships m USING (contact_id)"
    )
    assert {r["autoresponder_id"] for r in items} == {autoresponder}
    assert {r["list_id"] for r in items} == {welcome}
    assert all(r["status"] == "pending" and r["later"] for r in items)
    assert len({r["event_id"] for r in items}) == CONTACTS - 1
    assert "reader0@example.com" not in {r["email"] for r in items}

    # the same file again: nobody new on the list, nothing announced, no new item
    again = await run_mailroom(
        installation.env, "contacts", "import", people, "--list", "welcome", "--json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["subscribed"] == 0
    assert await _waiting_messages(queue) == 0
    assert await pool.fetchval("SELECT count(*) FROM autoresponder_items") == CONTACTS - 1


async def test_a_dry_run_writes_nothing(installation: Installation, tmp_path: Path) -> None:
    pool = pool_of(installation)
    welcome = await make_list(pool, "welcome")
    await make_contact(pool, "reader1@example.com", welcome)
    await make_contact(pool, "reader2@example.com", welcome, status="unsubscribed")
    people = _people(tmp_path / "people.csv", 5)
    with people.open("a") as more:
        more.write("not-an-address,Bad,Row,Lima\nREADER3@example.com,Last,Wins,Rome\n")

    def snapshot() -> str:
        return (
            "SELECT (SELECT count(*) FROM contacts), (SELECT count(*) FROM lists),"
            " (SELECT count(*) FROM list_memberships), (SELECT count(*) FROM autoresponder_items),"
            " (SELECT string_agg(md5(c::text), ',' ORDER BY id) FROM contacts c),"
            " (SELECT string_agg(md5(m::text), ',' ORDER BY contact_id) FROM list_memberships m)"
        )

    before = await pool.fetchrow(snapshot())
    for list_name in ("welcome", "brand-new"):
        result = await run_mailroom(
            installation.env, "contacts", "import", people, "--list", list_name, "--dry-run"
        )
        assert result.returncode == 0, result.stderr
        assert await pool.fetchrow(snapshot()) == before, "nothing written"
        assert result.stderr.splitlines() == [
            f"{people}:7: invalid email 'not-an-address': An email address must have an @-sign.",
            "1 bad row(s) skipped",
        ]
        out = " ".join(result.stdout.split())
        subscribed = 3 if list_name == "welcome" else 5  # reader1 is on it, reader2 left it
        kept = 1 if list_name == "welcome" else 0
        assert out == (
            f"dry run: would import 5 contacts into list {list_name} (3 new, 2 updated,"
            f" {subscribed} newly subscribed, {kept} kept unsubscribed); nothing was written"
        )

    as_json = await run_mailroom(
        installation.env, "contacts", "import", people, "--list", "welcome", "--dry-run", "--json"
    )
    report = json.loads(as_json.stdout)
    assert report["dry_run"] is True and report["duplicates"] == 1
    assert [line for line, _ in report["bad_rows"]] == [7]

    refused = tmp_path / "refused.csv"
    refused.write_text("name,city\nAnn,Oslo\n")
    result = await run_mailroom(
        installation.env, "contacts", "import", refused, "--list", "welcome", "--dry-run"
    )
    assert result.returncode == 2
    assert "the first line must name the columns" in result.stderr
    assert await pool.fetchrow(snapshot()) == before

    # the real import: the last line of an address wins
    result = await run_mailroom(installation.env, "contacts", "import", people, "--list", "welcome")
    assert result.returncode == 0, result.stderr
    row = await pool.fetchrow(
        "SELECT email, first_name, attributes->>'city' AS city FROM contacts"
        " WHERE lower(email) = 'reader3@example.com'"
    )
    assert row is not None
    assert (row["email"], row["first_name"], row["city"]) == ("READER3@example.com", "Last", "Rome")
