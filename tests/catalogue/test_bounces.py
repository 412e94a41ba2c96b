"""Bad input to the bounce mailbox: forged bounces and complaints, broken signatures, malformed
and oversized MIME. Each message goes through the bounce processor's own `take` (parse in a
thread, commit the effects, publish bounce.detected) against a real PostgreSQL and RabbitMQ;
the IMAP side is covered by tests/integration/test_bounce_processor.py.

What must hold: only proof (a VERP address with a valid signature, or our own signed
Message-ID in the returned headers) changes an item or suppresses an address, and only its
own recipient's; everything else is recorded for a person to look at and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from mailroom_bounce_processor.matching import describe
from mailroom_bounce_processor.processor import BounceProcessor
from mailroom_bounce_processor.records import Outcome
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import BounceMailbox
from mailroom_common.signing import Signer

from tests.catalogue.cases import Case, case_ids
from tests.support import bounce_messages as bm
from tests.support.environment import Installation

OLD_KEY = "the-previous-signing-key-5d1c0e9a"
NEW_KEY = "the-current-signing-key-0b7e44f1"
BOUNCE_DOMAIN = "bounces.mailroom.test"
MID_DOMAIN = "mailroom.test"

CASES = [
    Case(
        "bounces-01",
        "a DSN without any VERP address or returned headers naming a real recipient",
        "recorded unverified (no item, matched_by null); the item stays sent, nothing suppressed,"
        " no bounce.detected",
    ),
    Case(
        "bounces-02",
        "a DSN to the attacker's own valid VERP naming the attacker and a second, real recipient",
        "only the attacker's own item bounces and only the attacker is suppressed; the second"
        " recipient is recorded unverified and unchanged",
    ),
    Case(
        "bounces-03",
        "a DSN to a VERP address naming the victim's item with a wrong signature",
        "recorded unverified; the victim's item stays sent, nothing suppressed",
    ),
    Case(
        "bounces-04",
        "a DSN to a VERP address whose signature is non-ASCII",
        "no TypeError: processed as a bounce, recorded unverified, nothing changed;"
        " `bounce parse` answers item_id null",
    ),
    Case(
        "bounces-05",
        "a DSN cut off after its headers, and pure binary garbage, in the mailbox",
        "kept in unparsed_messages with a reason; nothing changed; the next message is processed",
    ),
    Case(
        "bounces-06",
        "a 20 MB DSN (a huge returned original) naming a real recipient without proof",
        "processed as a bounce, recorded unverified, nothing changed",
    ),
    Case(
        "bounces-07",
        "an ARF complaint forged for a real recipient (someone else's Message-ID)",
        "recorded as an unverified complaint; the address is not suppressed",
    ),
    Case(
        "bounces-08",
        "a provider's ARF complaint returning our signed Message-ID",
        "the item's recipient is suppressed (complaint), the item stays sent (it was delivered)",
    ),
    Case(
        "bounces-09",
        "an ARF complaint returning the attacker's own signed Message-ID but naming the victim",
        "acts only on the signed item's own recipient (the attacker); the victim is untouched",
    ),
    Case(
        "bounces-10",
        "an out-of-office auto-reply naming a real recipient",
        "not a bounce: no bounces row, nothing changed",
    ),
    Case(
        "bounces-11",
        "a DSN for an autoresponder item with a forged `a<id>` VERP signature",
        "the autoresponder item stays sent, nothing suppressed",
    ),
    Case(
        "bounces-12",
        "a message/rfc822 bomb nested 200 levels deep around a DSN for a real recipient",
        "kept as unparsed (nesting), nothing changed, the processor goes on",
    ),
    Case(
        "bounces-13",
        "X-Mailroom-Item of the victim's item in the returned headers (unsigned), no VERP",
        "not proof: recorded unverified, nothing changed",
    ),
    Case(
        "bounces-14",
        "the victim's Message-ID with a forged tag returned in a DSN",
        "not proof: recorded unverified, nothing changed",
    ),
    Case(
        "bounces-15",
        "a real DSN to a VERP address signed with the previous (rotated) key",
        "verified: the item bounces (hard) and its recipient is suppressed",
    ),
    Case(
        "bounces-16",
        "a real DSN returning our Message-ID signed with the previous key, no VERP",
        "verified by Message-ID: the item bounces and its recipient is suppressed",
    ),
    Case(
        "bounces-17",
        "a real DSN for an autoresponder item (valid `a<id>` VERP)",
        "the autoresponder item bounces and its recipient is suppressed",
    ),
    Case(
        "bounces-18",
        "an Amazon SES bounce notification (JSON by email) naming a real recipient, no proof",
        "recorded unverified; nothing changed",
    ),
    Case(
        "bounces-19",
        "an Amazon SES bounce notification whose mail.source is the item's signed VERP address",
        "verified: the item bounces and its recipient is suppressed",
    ),
]


@dataclass
class World:
    """A campaign sent to victim and attacker, an autoresponder email to victim, the bounce
    processor of an installation whose signing key was rotated."""

    pool: asyncpg.Pool
    processor: BounceProcessor
    signer: Signer  # the current key
    old_signer: Signer  # the previous key
    mailbox: BounceMailbox
    campaign_id: int
    victim: str
    attacker: str
    victim_item: int
    attacker_item: int
    auto_item: int

    async def take(self, raw: bytes) -> Outcome:
        return await self.processor.take(raw, self.mailbox)

    def verp(self, item_ref: str, signer: Signer | None = None) -> str:
        return (signer or self.signer).verp_address(item_ref, BOUNCE_DOMAIN)

    def original(self, item_ref: str, to: str, signer: Signer | None = None) -> bytes:
        mid = (signer or self.signer).message_id(item_ref, f"c{self.campaign_id}", MID_DOMAIN)
        return _original(to, mid, item_ref)

    async def item(self, item_id: int, table: str = "campaign_items") -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT status, bounce_kind FROM {table} WHERE id = $1", item_id
        )
        assert row is not None
        return dict(row)

    async def suppressions(self) -> dict[str, str]:
        rows = await self.pool.fetch("SELECT email, reason FROM suppressions")
        return {r["email"]: r["reason"] for r in rows}

    async def bounces(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT email, kind, action, matched_by, item_id, autoresponder_item_id"
            " FROM bounces ORDER BY id"
        )
        return [dict(r) for r in rows]

    async def unchanged(self) -> None:
        """Nobody's state changed: every item as sent, no suppression."""
        assert await self.item(self.victim_item) == {"status": "sent", "bounce_kind": None}
        assert await self.item(self.attacker_item) == {"status": "sent", "bounce_kind": None}
        auto = await self.item(self.auto_item, "autoresponder_items")
        assert auto == {"status": "sent", "bounce_kind": None}
        assert await self.suppressions() == {}

    async def recorded_unverified(self, email: str, kind: str = "hard") -> None:
        rows = [r for r in await self.bounces() if r["email"] == email]
        assert rows, f"no bounces row for {email}"
        for row in rows:
            assert row["kind"] == kind
            assert row["matched_by"] is None
            assert row["item_id"] is None and row["autoresponder_item_id"] is None


def _original(to: str, message_id: str, item_ref: str | None = None) -> bytes:
    extra = f"X-Mailroom-Item: {item_ref}\r\n" if item_ref else ""
    return (
        "From: Mailroom News <news@mailroom.test>\r\n"
        f"To: {to}\r\n"
        "Subject: Autumn news\r\n"
        "Date: Mon, 3 Nov 2025 09:00:00 +0000\r\n"
        f"Message-ID: {message_id}\r\n"
        f"{extra}"
        "\r\nhello\r\n"
    ).encode()


def ses_bounce(recipient: str, source: str, message_id: str = "<x@ses.example>") -> bytes:
    """An Amazon SES bounce notification delivered by email (SNS), as providers send it."""
    notification = json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
            },
            "mail": {"source": source, "commonHeaders": {"messageId": message_id}},
        }
    )
    return (
        "From: no-reply@sns.amazonaws.com\r\nTo: ses-feedback@mailroom.test\r\n"
        "Subject: AWS Notification Message\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{notification}\r\n"
    ).encode()


async def _seed(pool: asyncpg.Pool) -> tuple[int, int, int, int]:
    """(campaign id, victim's item, attacker's item, victim's autoresponder item)."""
    async with pool.acquire() as conn, conn.transaction():
        list_id = await conn.fetchval("INSERT INTO lists (name) VALUES ('news') RETURNING id")
        contacts = {}
        for email in ("victim@example.net", "attacker@evil.example"):
            contacts[email] = await conn.fetchval(
                "INSERT INTO contacts (email, first_name, last_name) VALUES ($1, 'A', 'B')"
                " RETURNING id",
                email,
            )
            await conn.execute(
                "INSERT INTO list_memberships (list_id, contact_id, status)"
                " VALUES ($1, $2, 'subscribed')",
                list_id,
                contacts[email],
            )
        campaign_id = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, from_name, html_template,"
            " text_template, status) VALUES ('Autumn news', 'News', 'news@mailroom.test',"
            " 'News', '<p>hi</p>', 'hi', 'completed') RETURNING id"
        )
        items = []
        for email in ("victim@example.net", "attacker@evil.example"):
            items.append(
                await conn.fetchval(
                    "INSERT INTO campaign_items (campaign_id, contact_id, email, status, sent_at)"
                    " VALUES ($1, $2, $3, 'sent', now()) RETURNING id",
                    campaign_id,
                    contacts[email],
                    email,
                )
            )
        autoresponder = await conn.fetchval(
            "INSERT INTO autoresponders (name, trigger_kind, list_id, subject, html_template)"
            " VALUES ('Welcome', 'contact.subscribed', $1, 'Welcome', '<p>hi</p>') RETURNING id",
            list_id,
        )
        auto_item = await conn.fetchval(
            "INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email,"
            " due_at, status, sent_at) VALUES ($1, $2, 'e1', 'victim@example.net', now(),"
            " 'sent', now()) RETURNING id",
            autoresponder,
            contacts["victim@example.net"],
        )
    return campaign_id, items[0], items[1], auto_item


@pytest.fixture
async def world() -> AsyncIterator[World]:
    install = Installation(signing_key=NEW_KEY, signing_key_previous=OLD_KEY)
    pool = await install.setup()
    broker = make_broker(install.settings)
    try:
        await broker.connect()
        await declare_topology(broker, Topology.from_settings(install.settings))
        runtime = Runtime.build(install.settings, pool, broker)
        campaign_id, victim_item, attacker_item, auto_item = await _seed(pool)
        yield World(
            pool=pool,
            processor=BounceProcessor(runtime),
            signer=runtime.signer,
            old_signer=Signer(OLD_KEY.encode()),
            mailbox=BounceMailbox(),
            campaign_id=campaign_id,
            victim="victim@example.net",
            attacker="attacker@evil.example",
            victim_item=victim_item,
            attacker_item=attacker_item,
            auto_item=auto_item,
        )
    finally:
        await broker.stop()
        await install.teardown()


# --- the cases ----------------------------------------------------------------------------


async def dsn_without_verp(w: World) -> None:
    outcome = await w.take(bm.dsn("postmaster@mailroom.test", w.victim))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def attacker_verp_and_second_recipient(w: World) -> None:
    raw = bm.multi_dsn(w.verp(str(w.attacker_item)), [w.attacker, w.victim])
    outcome = await w.take(raw)
    assert outcome.outcome == "bounce"
    assert [(e.email, e.item_id, e.suppressed) for e in outcome.events] == [
        (w.attacker, w.attacker_item, True)
    ]
    assert await w.item(w.attacker_item) == {"status": "bounced", "bounce_kind": "hard"}
    assert await w.item(w.victim_item) == {"status": "sent", "bounce_kind": None}
    assert await w.suppressions() == {w.attacker: "hard_bounce"}
    await w.recorded_unverified(w.victim)


async def bad_verp_signature(w: World) -> None:
    good = w.verp(str(w.victim_item))
    forged = good.replace(good.split("-")[1][:13], "aaaaaaaaaaaaa")
    assert forged != good
    outcome = await w.take(bm.dsn(forged, w.victim))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def non_ascii_verp_signature(w: World) -> None:
    forged = f"bounces+{w.victim_item}-\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9@{BOUNCE_DOMAIN}"
    raw = bm.dsn(forged, w.victim)
    outcome = await w.take(raw)
    assert outcome.outcome == "bounce" and outcome.events == ()
    assert await w.pool.fetchval("SELECT count(*) FROM unparsed_messages") == 0
    await w.recorded_unverified(w.victim)
    await w.unchanged()
    assert describe("forged.eml", raw, w.signer)["item_id"] is None


async def garbage_mime(w: World) -> None:
    truncated = bm.dsn("postmaster@mailroom.test", w.victim)[:300]
    garbage = bytes(range(256)) * 64
    outcomes = [await w.take(truncated), await w.take(garbage)]
    assert [o.outcome for o in outcomes] == ["unparsed", "unparsed"]
    reasons = [r["reason"] for r in await w.pool.fetch("SELECT reason FROM unparsed_messages")]
    assert len(reasons) == 2 and all(reasons), reasons
    await w.unchanged()
    after = await w.take(bm.dsn("postmaster@mailroom.test", "later@example.org"))
    assert after.outcome == "bounce"


async def twenty_megabytes(w: World) -> None:
    padding = (b"z" * 998 + b"\r\n") * (20 * 1024 * 1024 // 1000)
    returned = b"Content-Type: message/rfc822\r\n\r\nFrom: a@b.example\r\nSubject: big\r\n\r\n"
    raw = bm.dsn("postmaster@mailroom.test", w.victim).replace(
        b"--BND--\r\n", b"--BND\r\n" + returned + padding + b"\r\n--BND--\r\n"
    )
    assert len(raw) > 20 * 1024 * 1024
    outcome = await w.take(raw)
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def forged_complaint(w: World) -> None:
    original = _original(w.victim, "<not-ours.123@elsewhere.example>")
    outcome = await w.take(bm.complaint(w.victim, original))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim, kind="complaint")
    await w.unchanged()


async def signed_complaint(w: World) -> None:
    original = w.original(str(w.victim_item), w.victim)
    outcome = await w.take(bm.complaint(w.victim, original))
    assert [(e.email, e.kind, e.item_id, e.suppressed) for e in outcome.events] == [
        (w.victim, "complaint", w.victim_item, True)
    ]
    assert await w.suppressions() == {w.victim: "complaint"}
    assert await w.item(w.victim_item) == {"status": "sent", "bounce_kind": None}
    rows = await w.bounces()
    assert [(r["email"], r["matched_by"], r["item_id"]) for r in rows] == [
        (w.victim, "message_id", w.victim_item)
    ]


async def complaint_with_attackers_message_id(w: World) -> None:
    original = w.original(str(w.attacker_item), w.victim)
    outcome = await w.take(bm.complaint(w.victim, original))
    assert [(e.email, e.item_id) for e in outcome.events] == [(w.attacker, w.attacker_item)]
    assert await w.suppressions() == {w.attacker: "complaint"}
    assert await w.item(w.victim_item) == {"status": "sent", "bounce_kind": None}


async def auto_reply(w: World) -> None:
    outcome = await w.take(bm.out_of_office(w.victim, w.verp(str(w.victim_item))))
    assert outcome.outcome == "not_bounce" and outcome.events == ()
    assert await w.bounces() == []
    await w.unchanged()


async def forged_autoresponder_verp(w: World) -> None:
    forged = w.verp(f"a{w.auto_item}", Signer(b"an attacker's guess at the key"))
    outcome = await w.take(bm.dsn(forged, w.victim))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def nested_bomb(w: World) -> None:
    nested = bm.dsn("postmaster@mailroom.test", w.victim)
    for depth in range(200):
        nested = (
            f"From: a@example.org\r\nSubject: fwd {depth}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
        ).encode() + nested
    outcome = await w.take(nested)
    assert outcome.outcome in ("unparsed", "bounce"), outcome
    if outcome.outcome == "bounce":
        await w.recorded_unverified(w.victim)
    else:
        reason = await w.pool.fetchval("SELECT reason FROM unparsed_messages")
        assert "nested" in reason or "MIME" in reason, reason
    await w.unchanged()
    assert (await w.take(bm.dsn("postmaster@mailroom.test", "x@example.org"))).outcome == "bounce"


async def unsigned_item_header(w: World) -> None:
    original = _original(w.victim, "<whatever.1@elsewhere.example>", str(w.victim_item))
    outcome = await w.take(bm.dsn("postmaster@mailroom.test", w.victim, original=original))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def forged_message_id_tag(w: World) -> None:
    mid = f"<c{w.campaign_id}.{w.victim_item}.AAAAAAAA@{MID_DOMAIN}>"
    assert mid != w.signer.message_id(str(w.victim_item), f"c{w.campaign_id}", MID_DOMAIN)
    original = _original(w.victim, mid)
    outcome = await w.take(bm.dsn("postmaster@mailroom.test", w.victim, original=original))
    assert outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def previous_key_verp(w: World) -> None:
    verp = w.verp(str(w.victim_item), w.old_signer)
    outcome = await w.take(bm.dsn(verp, w.victim))
    assert [(e.email, e.item_id, e.suppressed) for e in outcome.events] == [
        (w.victim, w.victim_item, True)
    ]
    assert await w.item(w.victim_item) == {"status": "bounced", "bounce_kind": "hard"}
    assert await w.suppressions() == {w.victim: "hard_bounce"}


async def previous_key_message_id(w: World) -> None:
    original = w.original(str(w.victim_item), w.victim, w.old_signer)
    outcome = await w.take(bm.dsn("postmaster@mailroom.test", w.victim, original=original))
    assert [(e.email, e.item_id, e.suppressed) for e in outcome.events] == [
        (w.victim, w.victim_item, True)
    ]
    assert await w.item(w.victim_item) == {"status": "bounced", "bounce_kind": "hard"}
    assert [r["matched_by"] for r in await w.bounces()] == ["message_id"]


async def autoresponder_verp(w: World) -> None:
    outcome = await w.take(bm.dsn(w.verp(f"a{w.auto_item}"), w.victim))
    assert [(e.email, e.autoresponder_item_id, e.suppressed) for e in outcome.events] == [
        (w.victim, w.auto_item, True)
    ]
    auto = await w.item(w.auto_item, "autoresponder_items")
    assert auto == {"status": "bounced", "bounce_kind": "hard"}
    assert await w.item(w.victim_item) == {"status": "sent", "bounce_kind": None}
    assert await w.suppressions() == {w.victim: "hard_bounce"}


async def ses_without_proof(w: World) -> None:
    outcome = await w.take(ses_bounce(w.victim, "news@mailroom.test"))
    assert outcome.outcome == "bounce" and outcome.events == ()
    await w.recorded_unverified(w.victim)
    await w.unchanged()


async def ses_with_verp(w: World) -> None:
    outcome = await w.take(ses_bounce(w.victim, w.verp(str(w.victim_item))))
    assert [(e.email, e.item_id, e.suppressed) for e in outcome.events] == [
        (w.victim, w.victim_item, True)
    ]
    assert await w.item(w.victim_item) == {"status": "bounced", "bounce_kind": "hard"}
    assert await w.suppressions() == {w.victim: "hard_bounce"}


CHECKS: dict[str, Callable[[World], Awaitable[None]]] = {
    "bounces-01": dsn_without_verp,
    "bounces-02": attacker_verp_and_second_recipient,
    "bounces-03": bad_verp_signature,
    "bounces-04": non_ascii_verp_signature,
    "bounces-05": garbage_mime,
    "bounces-06": twenty_megabytes,
    "bounces-07": forged_complaint,
    "bounces-08": signed_complaint,
    "bounces-09": complaint_with_attackers_message_id,
    "bounces-10": auto_reply,
    "bounces-11": forged_autoresponder_verp,
    "bounces-12": nested_bomb,
    "bounces-13": unsigned_item_header,
    "bounces-14": forged_message_id_tag,
    "bounces-15": previous_key_verp,
    "bounces-16": previous_key_message_id,
    "bounces-17": autoresponder_verp,
    "bounces-18": ses_without_proof,
    "bounces-19": ses_with_verp,
}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_bounce_mailbox_input(case: Case, world: World) -> None:
    await CHECKS[case.id](world)
