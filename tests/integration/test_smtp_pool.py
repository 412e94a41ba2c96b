"""The SMTP pool against a real server that misbehaves: a connection is reused only when its
transaction ended cleanly, and our own slips or the account's problems never fail a recipient."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_outbound_sender.smtp_pool import SmtpPool

from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.outbound import outbound_email

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"


@pytest.fixture
def faulty_smtp() -> Iterator[FaultySmtpServer]:
    with FaultySmtpServer() as server:
        yield server


def pool_for(port: int, pool_size: int = 1, **changes: object) -> SmtpPool:
    return SmtpPool(SmtpAccount.model_validate({"port": port, "pool_size": pool_size, **changes}))


async def _cancel_when_stalled(server: FaultySmtpServer, send: asyncio.Task[object]) -> None:
    # the server's flag is a threading.Event: wait for it off the event loop
    assert await asyncio.to_thread(server.handler.stalled.wait, 10)
    send.cancel()
    with pytest.raises(asyncio.CancelledError):
        await send


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
async def test_a_send_cancelled_mid_transaction_does_not_spoil_the_next(
    faulty_smtp: FaultySmtpServer, stage: str
) -> None:
    faults = faulty_smtp.faults
    (faults.stall_rcpt if stage == "RCPT" else faults.stall_data).add("slow@example.test")
    faults.stall_seconds = 0.5
    pool = pool_for(faulty_smtp.port)
    try:
        send = asyncio.create_task(pool.send_all([outbound_email(1, "slow@example.test")]))
        await _cancel_when_stalled(faulty_smtp, send)
        await asyncio.sleep(faults.stall_seconds + 0.2)  # the server answers the old command

        outcomes = await pool.send_all([outbound_email(2, "next@example.test")])
    finally:
        await pool.close()

    assert [(o.status, o.smtp_code) for o in outcomes] == [("sent", 250)], outcomes
    assert faulty_smtp.handler.recipients()["next@example.test"] == 1


async def test_a_bad_sequence_reply_is_our_error_not_the_recipients(
    faulty_smtp: FaultySmtpServer,
) -> None:
    faulty_smtp.faults.rcpt_replies["odd@example.test"] = NESTED_MAIL
    pool = pool_for(faulty_smtp.port)
    try:
        first = await pool.send_all([outbound_email(1, "odd@example.test")])
        after = await pool.send_all([outbound_email(2, "fine@example.test")])
    finally:
        await pool.close()

    assert [(o.status, o.smtp_code) for o in first] == [("retry", 503)]
    assert not first[0].account_problem
    assert [o.status for o in after] == ["sent"]
    # the refused connection was dropped, and the email tried once more on a fresh one
    assert faulty_smtp.handler.commands["MAIL"] == 2


async def test_a_permanent_refusal_keeps_the_connection_after_a_reset(
    faulty_smtp: FaultySmtpServer,
) -> None:
    faulty_smtp.faults.rcpt_replies["gone@example.test"] = "550 5.1.1 No such user"
    pool = pool_for(faulty_smtp.port)
    try:
        outcomes = await pool.send_all(
            [outbound_email(1, "gone@example.test"), outbound_email(2, "here@example.test")]
        )
    finally:
        await pool.close()
    assert [(o.status, o.smtp_code) for o in outcomes] == [("failed", 550), ("sent", 250)]


async def test_a_connection_reset_after_the_message_is_a_temporary_failure(
    faulty_smtp: FaultySmtpServer,
) -> None:
    faulty_smtp.faults.reset_in_data_for.add("cut@example.test")
    pool = pool_for(faulty_smtp.port)
    try:
        outcomes = await pool.send_all(
            [outbound_email(1, "cut@example.test"), outbound_email(2, "next@example.test")]
        )
    finally:
        await pool.close()
    assert [o.status for o in outcomes] == ["retry", "sent"]
    assert "connection" in outcomes[0].smtp_reply


async def test_a_refused_login_is_the_accounts_problem_and_tried_once() -> None:
    with FaultySmtpServer(username="mailer", password="right-password") as server:
        pool = pool_for(server.port, 2, username="mailer", password="wrong-password")
        try:
            outcomes = await pool.send_all(
                [outbound_email(i, f"user{i}@example.test") for i in range(1, 11)]
            )
        finally:
            await pool.close()
    assert len(outcomes) == 10
    assert {(o.status, o.smtp_code, o.account_problem) for o in outcomes} == {("retry", 535, True)}
    assert not server.handler.received
    assert all("wrong-password" not in o.smtp_reply for o in outcomes)


async def test_replies_echoing_the_credentials_are_scrubbed(faulty_smtp: FaultySmtpServer) -> None:
    secret = "s3cret-Passw0rd"
    plain = base64.b64encode(f"\0mailer\0{secret}".encode()).decode()
    faulty_smtp.faults.rcpt_replies["echo@example.test"] = (
        f"550 5.7.1 you said AUTH PLAIN {plain} and then {secret}"
    )
    pool = pool_for(faulty_smtp.port, username="mailer", password=secret)
    # this server asks for no login: the client sends none, the reply still carries them
    pool.account = pool.account.model_copy(update={"username": ""})
    try:
        outcomes = await pool.send_all([outbound_email(1, "echo@example.test")])
    finally:
        await pool.close()
    reply = outcomes[0].smtp_reply
    assert outcomes[0].status == "failed" and reply.startswith("550 5.7.1")
    assert secret not in reply and plain not in reply and plain.rstrip("=") not in reply


async def test_throttling_replies_are_told_apart(faulty_smtp: FaultySmtpServer) -> None:
    faults = faulty_smtp.faults
    faults.rcpt_replies["slow@example.test"] = "451 4.7.500 Server busy. Please try again later"
    faults.rcpt_replies["quota@example.test"] = "454 Throttling failure: Maximum sending rate"
    faults.rcpt_replies["later@example.test"] = "451 4.3.0 Try again later"
    faults.rcpt_replies["grey@example.test"] = "451 4.7.1 Greylisted, please try again"
    pool = pool_for(faulty_smtp.port)
    try:
        outcomes = await pool.send_all(
            [
                outbound_email(1, "slow@example.test"),
                outbound_email(2, "quota@example.test"),
                outbound_email(3, "later@example.test"),
                outbound_email(4, "grey@example.test"),
            ]
        )
        faulty_smtp.busy_for(30)  # 421 at the greeting of the next connection
        await pool.close()
        pool = pool_for(faulty_smtp.port)
        busy = await pool.send_all([outbound_email(5, "next@example.test")])
    finally:
        await pool.close()

    throttled = {o.item_id: (o.status, o.throttled) for o in outcomes + busy}
    assert throttled == {
        1: ("retry", True),
        2: ("retry", True),
        3: ("retry", False),
        4: ("retry", False),
        5: ("retry", True),
    }
    assert not any(o.account_problem for o in outcomes + busy)


async def test_the_message_arrives_as_rendered_with_its_envelope(
    faulty_smtp: FaultySmtpServer,
) -> None:
    # the lean transaction (smtp_transaction.py): MAIL FROM and RCPT TO as given, the body
    # dot-stuffed on the way and whole on arrival, a refused recipient leaving the next
    # transaction on the same connection clean
    faulty_smtp.faults.rcpt_replies["gone@example.test"] = "550 5.1.1 No such user"
    body = "Hello\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n"
    email = outbound_email(1, "Ann.Example+tag@example.test")
    email = email.model_copy(update={"message": email.message.replace("Hello", body, 1)})
    pool = pool_for(faulty_smtp.port)
    try:
        outcomes = await pool.send_all(
            [outbound_email(2, "gone@example.test"), email, outbound_email(3, "b@example.test")]
        )
    finally:
        await pool.close()

    assert [(o.item_id, o.status) for o in outcomes] == [(2, "failed"), (1, "sent"), (3, "sent")]
    received = faulty_smtp.handler.received
    assert [(r.envelope_from, r.recipients) for r in received] == [
        (email.envelope_from, ["Ann.Example+tag@example.test"]),
        (email.envelope_from, ["b@example.test"]),
    ]
    assert received[0].data.replace(b"\r\n", b"\n") == email.message.encode().replace(
        b"\r\n", b"\n"
    )
