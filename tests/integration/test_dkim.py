"""DKIM end to end: every message of a campaign and an autoresponder, as the SMTP server
received it, verified by dkimpy against the published keys; the keys made by
`mailroom settings dkim-keygen`, stored write-only and rotated through the config service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from mailroom_common.dkim_signing import dkim_signer
from mailroom_common.events import ContactSubscribed
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount
from mailroom_common.signing import Signer

from tests.support.autoresponders import (
    make_autoresponder,
    make_contact,
    make_list,
    received_by,
    trigger,
)
from tests.support.cli import run_mailroom
from tests.support.dkim import DOMAIN, PublishedKeys, signature_tags
from tests.support.environment import Installation, wait_for
from tests.support.scenario import campaign_reaches, launched_campaign
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

TOKEN = "dkim-test-admin-token"
RECIPIENTS = 300


async def test_every_message_carries_signatures_that_verify(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    keys = PublishedKeys()
    _, campaign_id, _ = await launched_campaign(
        installation, smtp_server, RECIPIENTS, **keys.smtp_settings()
    )
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed" and status["counts"] == {"sent": RECIPIENTS}

    pool = installation.pool
    assert pool is not None
    welcome = await make_list(pool, "welcome")
    await make_autoresponder(installation, "Welcome", list_name="welcome")
    ann = await make_contact(pool, "ann.dkim@example.com", welcome)
    await trigger(installation, ContactSubscribed(contact_id=ann, list_id=welcome, event_id="d1"))

    async def welcomed() -> bool:
        return bool(received_by(smtp_server, "ann.dkim@example.com"))

    await wait_for(welcomed, 60, "the autoresponder's message")

    received = list(smtp_server.handler.received)
    assert len(received) == RECIPIENTS + 1
    signer = Signer(installation.settings.signing_key.get_secret_value().encode())
    for message in received:
        assert keys.verify(message.data) == [True, True], message.message_id
        signed = signature_tags(message.data)["h"].split(":")
        assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
        # From is news@mailroom.test, at the DKIM domain: the Message-ID and the return path
        # are aligned with it, and the bounce processor still recognises both
        assert message.message_id.endswith(f"@{DOMAIN}>")
        assert signer.verify_message_id(message.message_id) is not None
        assert signer.verify_verp_address(message.envelope_from) is not None
        assert message.envelope_from.endswith("@bounces.mailroom.test")  # under mailroom.test

    sample = received[0].data
    assert keys.verify(sample.replace(b"Subject: News", b"Subject: Olds", 1)) == [False, False]
    head, _, body = sample.partition(b"\r\n\r\n")
    assert keys.verify(head + b"\r\n\r\n" + body.replace(b"First", b"Fir5t", 1)) == [False, False]


# -- the keys through the config service ------------------------------------------------------


@pytest.fixture(scope="module")
async def config() -> AsyncIterator[tuple[Installation, dict[str, str]]]:
    install = Installation(admin_token=TOKEN)
    await install.setup()
    try:
        process = install.start_services("config", log_name="config-dkim")
        url = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        yield install, {**install.env, "MAILROOM_CONFIG_URL": url}
    finally:
        await install.teardown()


def _record_value(line: str) -> bytes:
    """The TXT value of a zone-file line `NAME. IN TXT "..." "..."`."""
    strings = line.partition(" IN TXT ")[2].strip()
    return "".join(part.strip('"') for part in strings.split('" "')).encode()


async def test_keygen_stores_the_key_write_only_and_prints_its_record(
    config: tuple[Installation, dict[str, str]],
) -> None:
    install, env = config
    assert install.pool is not None
    store = SettingsStore(install.pool, install.settings.settings_key)

    result = await run_mailroom(
        env, "settings", "dkim-keygen", "--selector", "s1", "--domain", DOMAIN
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f's1._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=')
    assert "signing with it from now on" in result.stderr
    account, _ = await store.load(SmtpAccount)
    assert account.dkim_domain == DOMAIN and account.dkim_selector == "s1"
    stored_pem = account.dkim_private_key.get_secret_value()
    raw = await install.pool.fetchval("SELECT value::text FROM settings WHERE group_name = 'smtp'")
    assert "PRIVATE KEY" not in raw  # encrypted at rest

    # a message signed with the stored key verifies against the printed record
    published = PublishedKeys(rsa_pem=stored_pem, extra={"s1": _record_value(line).decode()})
    signing = dkim_signer(DOMAIN, [("s1", stored_pem)])
    assert signing is not None
    message = signing.sign(b"From: a@mailroom.test\r\nSubject: x\r\n\r\nHello\r\n")
    assert published.verify(message) == [True]

    # the API never returns a key; `settings show` says it is set
    async with httpx.AsyncClient(
        base_url=env["MAILROOM_CONFIG_URL"], headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        for path in ("/settings", "/settings/smtp"):
            answer = await client.get(path)
            assert answer.status_code == 200 and "PRIVATE KEY" not in answer.text
        shown = (await client.get("/settings/smtp")).json()["settings"]
    assert shown["dkim_private_key"] == "********" and shown["dkim_next_private_key"] == ""
    result = await run_mailroom(env, "settings", "show", "smtp")
    assert result.returncode == 0 and "PRIVATE KEY" not in result.stdout
    assert "dkim_private_key │ ********" in " ".join(result.stdout.split())

    # rotation: the next key waits for its record, then becomes the active one
    result = await run_mailroom(env, "settings", "dkim-keygen", "--selector", "s2", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["stored_as"] == "next" and answer["record"].startswith("s2._domainkey.")
    account, _ = await store.load(SmtpAccount)
    assert account.dkim_selector == "s1" and account.dkim_next_selector == "s2"
    next_pem = account.dkim_next_private_key.get_secret_value()
    result = await run_mailroom(env, "settings", "set", "smtp", "dkim_selector=s2")
    assert result.returncode == 0, result.stderr
    account, _ = await store.load(SmtpAccount)
    assert (account.dkim_selector, account.dkim_previous_selector) == ("s2", "s1")
    assert account.dkim_private_key.get_secret_value() == next_pem

    result = await run_mailroom(env, "settings", "dkim-keygen", "--ed25519", "--selector", "e1")
    assert result.returncode == 0, result.stderr
    assert 'IN TXT "v=DKIM1; k=ed25519; p=' in result.stdout
    result = await run_mailroom(env, "settings", "dkim-keygen", "--selector", "s1")
    assert result.returncode == 2 and "in use" in result.stderr
    result = await run_mailroom(env, "settings", "set", "smtp", "dkim_private_key=oops")
    assert result.returncode == 2
    assert result.stderr == "error: dkim_private_key: not an unencrypted PEM private key\n"
