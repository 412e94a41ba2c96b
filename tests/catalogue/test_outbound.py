"""Bad input to the outbound sender: forged outbound.batch messages on the broker, and SMTP
servers answering what they should not. Each batch goes through the sender's own
`handle_batch` against a real PostgreSQL, RabbitMQ and an aiosmtpd server on loopback.

What must hold: an email goes only to the recipient of its item (envelope and To), a forged
one is dropped and nothing is recorded for it; a reply is stored and published without the
account's credentials, on one bounded line; an error of ours or of the account never fails
a recipient."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from mailroom_common.intake import Rejected
from mailroom_common.smtp_replies import MAX_REPLY_CHARS
from mailroom_outbound_sender.smtp_pool import SmtpPool
from pydantic import SecretStr

from tests.catalogue.cases import Case, case_ids
from tests.support.environment import Installation
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.outbound import SenderBench, outbound_email, sender_bench

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

USER, PASSWORD = "mailer", "Pa55-w0rd-never-shown"
AUTH_PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()

CASES = [
    Case(
        "outbound-01",
        "an outbound.batch naming a real item but addressed to an outsider",
        "dead-lettered (Rejected: no email addressed to its item's recipient); nothing sent;"
        " the item stays queued",
    ),
    Case(
        "outbound-02",
        "a batch with the item's address in the envelope but another address in To",
        "that email is dropped and counted, its item stays queued; the genuine email beside it"
        " is sent",
    ),
    Case(
        "outbound-03",
        "a batch naming the items of another kind (autoresponder ids in a campaign batch) and"
        " ids that exist nowhere",
        "dead-lettered; nothing sent, no item of either kind changed",
    ),
    Case(
        "outbound-04",
        "a batch claiming campaign A while naming an item of campaign B",
        "dead-lettered; campaign B's item stays queued",
    ),
    Case(
        "outbound-05",
        "an SMTP server whose refusal echoes the AUTH PLAIN line and the password",
        "the item fails with the 550; smtp_reply in PostgreSQL and delivery.results carry"
        " neither the password nor its base64 forms",
    ),
    Case(
        "outbound-06",
        "the SMTP account's password is wrong (535 at login)",
        "every item waits in retry with its tries given back (attempts 0), a retry batch keeps"
        " attempt 0; no item failed, one login tried for the whole chunk",
    ),
    Case(
        "outbound-07",
        "the server answers RCPT with 503 5.5.1 nested MAIL command",
        "retry (our protocol error), never failed; the connection is dropped",
    ),
    Case(
        "outbound-08",
        "the server resets the connection at the end of DATA",
        "retry (the delivery is unknown), never failed; the next email goes through",
    ),
    Case(
        "outbound-09",
        "a reply of 100 KB, more than the SMTP client reads",
        "retry (no reply we could read: the connection is dropped), never failed",
    ),
    Case(
        "outbound-10",
        "a To header naming the recipient and a second address",
        "that email is dropped and counted; nothing sent",
    ),
    Case(
        "outbound-11",
        "an envelope recipient differing from the item's address only by letter case",
        "sent (addresses compare case-insensitively)",
    ),
    Case(
        "outbound-12",
        "a 30 KB reply of many lines with CR, LF and NUL in them",
        "stored and published as one printable line of at most 1,000 characters",
    ),
]


@dataclass
class Stage:
    bench: SenderBench
    smtp: FaultySmtpServer


Check = Callable[[Stage], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(case_id: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS[case_id] = function
        return function

    return register


async def _published_replies(bench: SenderBench) -> list[str]:
    return [
        result.smtp_reply or ""
        for results in await bench.published_results()
        for result in results.results
    ]


@check("outbound-01")
async def forged_to_an_outsider(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["victim@example.test"])
    batch = bench.batch([outbound_email(item, "outsider@evil.test")])
    with pytest.raises(Rejected, match="1 forged"):
        await bench.sender.handle_batch(batch, redelivered=False)
    assert not stage.smtp.handler.received
    assert (await bench.rows([item]))[item]["status"] == "queued"


@check("outbound-02")
async def mismatched_to_header(stage: Stage) -> None:
    bench = stage.bench
    forged, genuine = await bench.items(["a@example.test", "b@example.test"])
    batch = bench.batch(
        [
            outbound_email(forged, "a@example.test", to="someone@evil.test"),
            outbound_email(genuine, "b@example.test"),
        ]
    )
    await bench.sender.handle_batch(batch, redelivered=False)
    assert stage.smtp.handler.recipients() == {"b@example.test": 1}
    rows = await bench.rows([forged, genuine])
    assert rows[forged]["status"] == "queued" and rows[genuine]["status"] == "sent"


@check("outbound-03")
async def another_kinds_items(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["c@example.test"])
    pool = bench.pool
    responder = await pool.fetchval(
        "INSERT INTO autoresponders (name, trigger_kind, list_id, subject, html_template)"
        " SELECT 'welcome', 'contact.subscribed', id, 'Hi', '<p>hi</p>' FROM lists"
        " WHERE name = 'bench' RETURNING id"
    )
    contact = await pool.fetchval("SELECT contact_id FROM campaign_items WHERE id = $1", item)
    auto_item = await pool.fetchval(
        "INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email, due_at,"
        " status) VALUES ($1, $2, 'e1', 'auto@example.test', now(), 'queued') RETURNING id",
        responder,
        contact,
    )
    batch = bench.batch(
        [outbound_email(auto_item, "auto@example.test"), outbound_email(10**9, "x@example.test")]
    )
    with pytest.raises(Rejected, match="2 forged"):
        await bench.sender.handle_batch(batch, redelivered=False)
    assert not stage.smtp.handler.received
    assert (await bench.rows([item]))[item]["status"] == "queued"
    status = await pool.fetchval("SELECT status FROM autoresponder_items WHERE id = $1", auto_item)
    assert status == "queued"


@check("outbound-04")
async def another_campaigns_item(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["d@example.test"])
    other = await bench.pool.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template, status)"
        " VALUES ('other', 'Hi', 'news@mailroom.test', '<p>hi</p>', 'sending') RETURNING id"
    )
    batch = bench.batch([outbound_email(item, "d@example.test")])
    batch = batch.model_copy(update={"campaign_id": other})
    with pytest.raises(Rejected):
        await bench.sender.handle_batch(batch, redelivered=False)
    assert not stage.smtp.handler.received
    assert (await bench.rows([item]))[item]["status"] == "queued"


@check("outbound-05")
async def auth_echo_in_reply(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["echo@example.test"])
    stage.smtp.faults.rcpt_replies["echo@example.test"] = (
        f"550 5.7.1 you sent AUTH PLAIN {AUTH_PLAIN} ({USER}:{PASSWORD})"
    )
    await bench.sender.handle_batch(
        bench.batch([outbound_email(item, "echo@example.test")]), redelivered=False
    )
    row = (await bench.rows([item]))[item]
    assert row["status"] == "failed" and row["smtp_code"] == 550
    published = await _published_replies(bench)
    assert len(published) == 1
    for reply in (row["smtp_reply"], *published):
        assert reply.startswith("550 5.7.1")
        for secret in (PASSWORD, AUTH_PLAIN, AUTH_PLAIN.rstrip("=")):
            assert secret not in reply


@check("outbound-06")
async def refused_login(stage: Stage) -> None:
    bench = stage.bench
    emails = [f"w{i}@example.test" for i in range(6)]
    items = await bench.items(emails)
    account = bench.sender.account.model_copy(update={"password": SecretStr("wrong")})
    bench.sender.account, bench.sender.smtp = account, SmtpPool(account)
    await bench.sender.handle_batch(
        bench.batch([outbound_email(i, e) for i, e in zip(items, emails, strict=True)]),
        redelivered=False,
    )
    rows = await bench.rows(items)
    assert {(r["status"], r["attempts"], r["smtp_code"]) for r in rows.values()} == {
        ("retry", 0, 535)
    }
    retried = await bench.retry_messages()
    assert sorted(e.item_id for b in retried for e in b.emails) == sorted(items)
    assert {e.attempt for b in retried for e in b.emails} == {0}
    assert not stage.smtp.handler.received


@check("outbound-07")
async def nested_mail(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["nested@example.test"])
    stage.smtp.faults.rcpt_replies["nested@example.test"] = "503 5.5.1 Error: nested MAIL command"
    await bench.sender.handle_batch(
        bench.batch([outbound_email(item, "nested@example.test")]), redelivered=False
    )
    row = (await bench.rows([item]))[item]
    assert (row["status"], row["smtp_code"]) == ("retry", 503)
    assert [b.emails[0].attempt for b in await bench.retry_messages()] == [1]


@check("outbound-08")
async def reset_mid_data(stage: Stage) -> None:
    bench = stage.bench
    cut, after = await bench.items(["cut@example.test", "after@example.test"])
    stage.smtp.faults.reset_in_data_for.add("cut@example.test")
    await bench.sender.handle_batch(
        bench.batch(
            [outbound_email(cut, "cut@example.test"), outbound_email(after, "after@example.test")]
        ),
        redelivered=False,
    )
    rows = await bench.rows([cut, after])
    assert rows[cut]["status"] == "retry" and rows[after]["status"] == "sent"


@check("outbound-09")
async def reply_too_long_to_read(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["huge@example.test"])
    stage.smtp.faults.rcpt_replies["huge@example.test"] = "550 5.1.1 " + "x" * 100_000
    await bench.sender.handle_batch(
        bench.batch([outbound_email(item, "huge@example.test")]), redelivered=False
    )
    row = (await bench.rows([item]))[item]
    assert row["status"] == "retry"
    assert len(row["smtp_reply"]) <= MAX_REPLY_CHARS


@check("outbound-12")
async def long_reply_with_control_characters(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["noisy@example.test"])
    lines = ["550-5.1.1 " + "x\x00y\r" * 250] * 30
    stage.smtp.faults.rcpt_replies["noisy@example.test"] = "\r\n".join([*lines, "550 5.1.1 end"])
    await bench.sender.handle_batch(
        bench.batch([outbound_email(item, "noisy@example.test")]), redelivered=False
    )
    row = (await bench.rows([item]))[item]
    assert row["status"] == "failed"
    for reply in (row["smtp_reply"], *await _published_replies(bench)):
        assert len(reply) <= MAX_REPLY_CHARS
        assert reply.isprintable()
        assert reply.startswith("550 5.1.1 x y")


@check("outbound-10")
async def to_header_with_two_addresses(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["two@example.test"])
    forged = outbound_email(item, "two@example.test", to="two@example.test, spam@evil.test")
    with pytest.raises(Rejected):
        await bench.sender.handle_batch(bench.batch([forged]), redelivered=False)
    assert not stage.smtp.handler.received
    assert (await bench.rows([item]))[item]["status"] == "queued"


@check("outbound-11")
async def recipient_in_another_case(stage: Stage) -> None:
    bench = stage.bench
    [item] = await bench.items(["Mixed.Case@Example.test"])
    email = outbound_email(item, "mixed.case@example.test")
    await bench.sender.handle_batch(bench.batch([email]), redelivered=False)
    assert (await bench.rows([item]))[item]["status"] == "sent"


@pytest.fixture
async def stage(installation: Installation) -> AsyncIterator[Stage]:
    with FaultySmtpServer(username=USER, password=PASSWORD) as smtp:
        async with sender_bench(installation, smtp.port, username=USER, password=PASSWORD) as bench:
            yield Stage(bench, smtp)


def test_every_case_has_its_check() -> None:
    assert set(CHECKS) == {case.id for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_outbound(case: Case, stage: Stage) -> None:
    await CHECKS[case.id](stage)
