"""The config service's test-smtp action answers with the server's reply, scrubbed."""

from __future__ import annotations

import base64

import pytest
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_config.checks import send_test_email

from tests.support.faulty_smtp import FaultySmtpServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]


@pytest.mark.parametrize("accepted", [True, False])
async def test_a_reply_echoing_auth_plain_loses_the_credentials(accepted: bool) -> None:
    user, secret = "mailer", "Echo-Me-Not-42"
    plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    echo = f"you said AUTH PLAIN {plain} ({user}:{secret})"
    with FaultySmtpServer(username=user, password=secret) as server:
        to = "admin@example.test"
        replies = server.faults.data_replies if accepted else server.faults.rcpt_replies
        replies[to] = f"250 2.0.0 queued; {echo}" if accepted else f"550 5.7.1 {echo}"
        account = SmtpAccount(port=server.port, username=user, password=secret)
        result = await send_test_email(account, to)
    assert result.ok is accepted
    assert "queued" in result.reply if accepted else "550 5.7.1" in result.reply
    for form in (secret, plain, plain.rstrip("=")):
        assert form not in result.reply
