"""Provider webhooks of the bounce processor against a real PostgreSQL: signed sample calls
of Amazon SES (SNS), SendGrid, Postmark and Mailgun, made here in each provider's documented
format with test keys, are accepted and recorded; forged, stale, replayed and unauthenticated
ones are refused and change nothing; hostile bodies are refused. No network: the SNS
certificate and the SubscribeURL are served by an injected fetch."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from mailroom_bounce_processor.records import Recorder
from mailroom_bounce_processor.webhooks.app import CachedSettings, Webhooks, create_app
from mailroom_common.events import BounceDetected
from mailroom_common.runtime_settings import BounceMailbox, SettingsStore
from mailroom_common.signing import Signer

from tests.support.environment import Installation, wait_for
from tests.support.scenario import change_settings
from tests.support.seed import make_audience, make_campaign

pytestmark = pytest.mark.integration

TOPIC = "arn:aws:sns:eu-west-1:123456789012:mailroom-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC
    + "&Token=2336412f37"
)
MAILGUN_KEY = "key-mailgun-webhook-signing-0123456789"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "s3cret-postmark-pass"
POSTMARK_IP = "50.31.156.6"
DOMAIN = "mailroom.test"


def sns_certificate(key: rsa.RSAPrivateKey, name: str = "sns.amazonaws.com") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Fetcher:
    """The network, as far as these tests need it: what was asked for, and the answers."""

    answers: dict[str, bytes]
    asked: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        if url not in self.answers:
            raise ValueError("HTTP 404")
        return self.answers[url]


@dataclass
class Setup:
    pool: asyncpg.Pool
    signer: Signer
    client: httpx.AsyncClient
    fetcher: Fetcher
    announced: list[BounceDetected]
    items: dict[str, int]  # address -> campaign item id (sent)
    sns_key: rsa.RSAPrivateKey
    sendgrid_key: ec.EllipticCurvePrivateKey

    def message_id(self, email: str) -> str:
        return self.signer.message_id(str(self.items[email]), "c1", DOMAIN)

    async def state(self) -> tuple[Any, ...]:
        """Everything a webhook call may change."""
        return (
            await self.pool.fetch("SELECT * FROM bounces ORDER BY id"),
            await self.pool.fetch("SELECT email, reason FROM suppressions ORDER BY email"),
            await self.pool.fetch("SELECT id, status, bounce_kind FROM campaign_items ORDER BY id"),
        )

    async def suppression(self, email: str) -> str | None:
        reason: str | None = await self.pool.fetchval(
            "SELECT reason FROM suppressions WHERE email = $1", email
        )
        return reason

    async def item(self, email: str) -> tuple[str, str | None]:
        row = await self.pool.fetchrow(
            "SELECT status, bounce_kind FROM campaign_items WHERE id = $1", self.items[email]
        )
        assert row is not None
        return row["status"], row["bounce_kind"]

    async def bounce_rows(self, email: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT kind, matched_by, item_id, headers FROM bounces WHERE email = $1", email
        )


@pytest.fixture
async def setup(installation: Installation) -> AsyncIterator[Setup]:
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 10, tag="hooks")
    campaign_id = await make_campaign(pool, audience)
    await pool.execute("UPDATE campaigns SET launched_at = now() WHERE id = $1", campaign_id)
    people = sorted(audience.eligible)
    rows = await pool.fetch(
        "INSERT INTO campaign_items (campaign_id, contact_id, email, status, sent_at)"
        " SELECT DISTINCT ON (c.email) $1::bigint, c.id, c.email, 'sent',"
        " now() - interval '1 hour' FROM contacts c"
        " WHERE c.email = ANY($2::text[]) RETURNING id, email",
        campaign_id,
        people,
    )
    items = {r["email"]: r["id"] for r in rows}
    sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sendgrid_key = ec.generate_private_key(ec.SECP256R1())
    sendgrid_public = base64.b64encode(
        sendgrid_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    store = SettingsStore(pool, installation.settings.settings_key)
    await store.save(
        BounceMailbox(
            ses_topic_arns=[TOPIC],
            sendgrid_public_key=sendgrid_public,
            postmark_username=POSTMARK_USER,
            postmark_password=POSTMARK_PASSWORD,
            postmark_allowed_ips=["50.31.156.0/24"],
            mailgun_signing_key=MAILGUN_KEY,
        ),
        changed_by="tests",
    )
    signer = Signer(installation.settings.signing_key.get_secret_value().encode())
    fetcher = Fetcher({CERT_URL: sns_certificate(sns_key), SUBSCRIBE_URL: b"<Confirmed/>"})
    announced: list[BounceDetected] = []

    async def announce(event: BounceDetected) -> None:
        announced.append(event)

    webhooks = Webhooks(Recorder(pool, signer), CachedSettings(store), announce, fetcher)
    transport = httpx.ASGITransport(app=create_app(webhooks), client=(POSTMARK_IP, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
        yield Setup(pool, signer, client, fetcher, announced, items, sns_key, sendgrid_key)


# --- Amazon SES through SNS ----------------------------------------------------------------

SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def sns_message(
    key: rsa.RSAPrivateKey, kind: str, version: str = "2", **fields: Any
) -> dict[str, Any]:
    """An SNS message as SNS posts it, signed with `key` the documented way."""
    message: dict[str, Any] = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **fields,
    }
    canonical = "".join(
        f"{name}\n{message[name]}\n" for name in SIGNED[kind] if message.get(name) is not None
    )
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), digest)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def ses_bounce(email: str, message_id: str, bounce_type: str = "Permanent") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": email,
                        "action": "failed",
                        "status": "5.1.1" if bounce_type == "Permanent" else "4.4.7",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": "2026-12-02T21:00:00.000Z",
                "feedbackId": "0100017c-bounce",
            },
            "mail": {
                "timestamp": "2026-12-02T20:59:00.000Z",
                "messageId": "0100017c-ses-own-id",
                "source": "news@mailroom.test",
                "destination": [email],
                "headersTruncated": False,
                "headers": [{"name": "Message-ID", "value": message_id}],
                "commonHeaders": {"messageId": message_id, "subject": "News"},
            },
        }
    )


def ses_complaint(email: str, message_id: str) -> str:
    return json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": email}],
                "timestamp": "2026-12-02T21:00:00.000Z",
                "feedbackId": "0100017c-complaint",
                "complaintFeedbackType": "abuse",
            },
            "mail": {"messageId": "ses-id", "commonHeaders": {"messageId": message_id}},
        }
    )


async def post_sns(setup: Setup, message: dict[str, Any]) -> httpx.Response:
    return await setup.client.post(
        "/webhooks/ses",
        content=json.dumps(message),
        headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": str(message.get("Type")),
        },
    )


async def test_ses_subscription_bounces_and_complaints_are_recorded(setup: Setup) -> None:
    hard, soft, complained = sorted(setup.items)[:3]
    confirmation = sns_message(
        setup.sns_key,
        "SubscriptionConfirmation",
        Message="You have chosen to subscribe to the topic",
        SubscribeURL=SUBSCRIBE_URL,
        Token="2336412f37",
    )
    answer = await post_sns(setup, confirmation)
    assert answer.status_code == 200, answer.text
    assert SUBSCRIBE_URL in setup.fetcher.asked

    bounce = sns_message(
        setup.sns_key, "Notification", Message=ses_bounce(hard, setup.message_id(hard))
    )
    answer = await post_sns(setup, bounce)
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    assert await setup.item(hard) == ("bounced", "hard")
    assert await setup.suppression(hard) == "hard_bounce"
    [row] = await setup.bounce_rows(hard)
    assert (row["kind"], row["matched_by"], row["item_id"]) == (
        "hard",
        "message_id",
        setup.items[hard],
    )
    assert json.loads(row["headers"])["provider"] == "ses"

    transient = sns_message(
        setup.sns_key,
        "Notification",
        Subject="Amazon SES Email Event Notification",
        Message=ses_bounce(soft, setup.message_id(soft), "Transient"),
    )
    assert (await post_sns(setup, transient)).status_code == 200
    assert await setup.item(soft) == ("bounced", "soft")
    assert await setup.suppression(soft) is None

    complaint = sns_message(
        setup.sns_key,
        "Notification",
        version="1",  # SHA1withRSA
        Message=ses_complaint(complained, setup.message_id(complained)),
    )
    assert (await post_sns(setup, complaint)).status_code == 200
    assert await setup.suppression(complained) == "complaint"
    assert [r["kind"] for r in await setup.bounce_rows(complained)] == ["complaint"]
    assert {(e.email, e.kind) for e in setup.announced} == {
        (hard, "hard"),
        (soft, "soft"),
        (complained, "complaint"),
    }
    # the certificate was fetched once and kept
    assert setup.fetcher.asked.count(CERT_URL) == 1

    # SNS delivers again (same MessageId): accepted, recorded once
    again = await post_sns(setup, bounce)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert len(await setup.bounce_rows(hard)) == 1


async def test_ses_forgeries_are_refused_and_change_nothing(setup: Setup) -> None:
    victim = sorted(setup.items)[0]
    before = await setup.state()
    body = ses_bounce(victim, setup.message_id(victim))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_signature = sns_message(other_key, "Notification", Message=body)
    tampered = sns_message(setup.sns_key, "Notification", Message=body)
    tampered["Message"] = body.replace("Permanent", "Permanent ")
    evil_hosts = [
        "https://sns.eu-west-1.amazonaws.com.evil.test/cert.pem",
        "https://evil.test/SimpleNotificationService-1.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.test/x.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
    ]
    wrong_host = [
        sns_message(setup.sns_key, "Notification", Message=body, SigningCertURL=url)
        for url in evil_hosts
    ]
    stale = sns_message(
        setup.sns_key, "Notification", Message=body, Timestamp="2026-01-01T00:00:00.000Z"
    )
    other_topic = sns_message(
        setup.sns_key,
        "Notification",
        Message=body,
        TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-else",
    )
    foreign_subscription = sns_message(
        setup.sns_key,
        "SubscriptionConfirmation",
        Message="subscribe",
        TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-else",
        SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&x=1",
        Token="t",
    )
    unsigned = sns_message(setup.sns_key, "Notification", Message=body)
    del unsigned["Signature"]
    cases = [
        (forged_signature, "does not verify"),
        (tampered, "does not verify"),
        *((message, "SigningCertURL") for message in wrong_host),
        (stale, "replay"),
        (other_topic, "TopicArn"),
        (unsigned, "not signed"),
    ]
    for message, why in cases:
        answer = await post_sns(setup, message)
        assert answer.status_code == 403, (message, answer.text)
        assert why in answer.json()["detail"], answer.text
    answer = await post_sns(setup, foreign_subscription)
    assert answer.status_code == 403
    assert setup.fetcher.asked == [CERT_URL]  # nothing fetched but the real certificate
    assert await setup.state() == before
    assert setup.announced == []


# --- SendGrid ------------------------------------------------------------------------------


def sendgrid_call(
    key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]], timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def sendgrid_event(email: str, event: str, smtp_id: str | None, **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **extra,
    }
    if smtp_id is not None:
        found["smtp-id"] = smtp_id
    return found


async def test_sendgrid_signed_events_are_recorded(setup: Setup) -> None:
    hard, dropped, spam, delivered = sorted(setup.items)[3:7]
    events = [
        sendgrid_event(
            hard,
            "bounce",
            setup.message_id(hard),
            status="5.1.1",
            type="bounce",
            reason="550 5.1.1 The email account that you tried to reach does not exist",
        ),
        sendgrid_event(dropped, "dropped", setup.message_id(dropped), reason="Bounced Address"),
        sendgrid_event(spam, "spamreport", setup.message_id(spam)),
        sendgrid_event(delivered, "delivered", setup.message_id(delivered)),
    ]
    body, headers = sendgrid_call(setup.sendgrid_key, events)
    answer = await setup.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 3
    assert await setup.item(hard) == ("bounced", "hard")
    assert await setup.suppression(hard) == "hard_bounce"
    assert await setup.suppression(dropped) == "hard_bounce"
    assert await setup.suppression(spam) == "complaint"
    assert await setup.suppression(delivered) is None
    assert await setup.item(delivered) == ("sent", None)


async def test_sendgrid_forgeries_are_refused(setup: Setup) -> None:
    victim = sorted(setup.items)[3]
    before = await setup.state()
    events = [sendgrid_event(victim, "bounce", setup.message_id(victim), status="5.1.1")]
    other = ec.generate_private_key(ec.SECP256R1())
    body, wrong_key = sendgrid_call(other, events)
    _, good = sendgrid_call(setup.sendgrid_key, events)
    tampered = body.replace(b"5.1.1", b"5.1.2")
    _, stale = sendgrid_call(setup.sendgrid_key, events, int(time.time()) - 3600)
    unsigned = {"Content-Type": "application/json"}
    for content, headers, status in [
        (body, wrong_key, 403),
        (tampered, good, 403),
        # a stale call given a fresh timestamp: the signature covers the timestamp
        (body, {**stale, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time()))}, 403),
        (body, unsigned, 401),
    ]:
        answer = await setup.client.post("/webhooks/sendgrid", content=content, headers=headers)
        assert answer.status_code == status, answer.text
    # a correct signature over a stale timestamp
    stale_body, stale_headers = sendgrid_call(setup.sendgrid_key, events, int(time.time()) - 600)
    answer = await setup.client.post(
        "/webhooks/sendgrid", content=stale_body, headers=stale_headers
    )
    assert answer.status_code == 403 and "replay" in answer.json()["detail"]
    assert await setup.state() == before


# --- Postmark ------------------------------------------------------------------------------


def postmark_bounce(email: str, bounce_type: str = "HardBounce", record: str = "Bounce") -> bytes:
    return json.dumps(
        {
            "RecordType": record,
            "ID": int(uuid.uuid4().int % 10**10),
            "Type": bounce_type,
            "TypeCode": 1 if bounce_type == "HardBounce" else 512,
            "Name": "Hard bounce",
            "Tag": "",
            "MessageID": str(uuid.uuid4()),
            "ServerID": 23,
            "MessageStream": "outbound",
            "Description": "The server was unable to deliver your message",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": email,
            "From": "news@mailroom.test",
            "BouncedAt": datetime.now(UTC).isoformat(),
            "Inactive": True,
        }
    ).encode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


async def test_postmark_authenticated_events_match_recent_sends(setup: Setup) -> None:
    hard, complained = sorted(setup.items)[7:9]
    auth = basic(POSTMARK_USER, POSTMARK_PASSWORD)
    answer = await setup.client.post(
        "/webhooks/postmark", content=postmark_bounce(hard), headers=auth
    )
    assert answer.status_code == 200, answer.text
    assert await setup.item(hard) == ("bounced", "hard")
    assert await setup.suppression(hard) == "hard_bounce"
    assert [r["matched_by"] for r in await setup.bounce_rows(hard)] == ["recipient"]
    complaint = postmark_bounce(complained, "SpamComplaint", "SpamComplaint")
    answer = await setup.client.post("/webhooks/postmark", content=complaint, headers=auth)
    assert answer.status_code == 200
    assert await setup.suppression(complained) == "complaint"

    # an address we sent nothing to lately: recorded for a person, nothing changes
    stranger = "stranger@elsewhere.test"
    answer = await setup.client.post(
        "/webhooks/postmark", content=postmark_bounce(stranger), headers=auth
    )
    assert answer.status_code == 200 and answer.json()["unproven"] == 1
    assert await setup.suppression(stranger) is None
    assert [r["matched_by"] for r in await setup.bounce_rows(stranger)] == [None]


async def test_postmark_without_credentials_or_from_elsewhere_is_refused(
    setup: Setup, installation: Installation
) -> None:
    victim = sorted(setup.items)[7]
    before = await setup.state()
    body = postmark_bounce(victim)
    for headers in [
        {"Content-Type": "application/json"},
        basic(POSTMARK_USER, "wrong"),
        basic("someone", POSTMARK_PASSWORD),
        {"Authorization": "Basic !!!", "Content-Type": "application/json"},
    ]:
        answer = await setup.client.post("/webhooks/postmark", content=body, headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
    outsider = httpx.ASGITransport(
        app=setup.client._transport.app,  # type: ignore[attr-defined]
        client=("203.0.113.9", 5555),
    )
    async with httpx.AsyncClient(transport=outsider, base_url="http://mailroom.test") as other:
        answer = await other.post(
            "/webhooks/postmark", content=body, headers=basic(POSTMARK_USER, POSTMARK_PASSWORD)
        )
    assert answer.status_code == 403
    assert await setup.state() == before


# --- Mailgun -------------------------------------------------------------------------------


def mailgun_call(
    event_data: dict[str, Any],
    key: str = MAILGUN_KEY,
    timestamp: int | None = None,
    token: str | None = None,
) -> bytes:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
    ).encode()


def mailgun_event(
    email: str, message_id: str, event: str = "failed", **extra: Any
) -> dict[str, Any]:
    return {
        "event": event,
        "id": uuid.uuid4().hex,
        "timestamp": time.time(),
        "recipient": email,
        "message": {"headers": {"message-id": message_id.strip("<>"), "subject": "News"}},
        **extra,
    }


JSON_TYPE = {"Content-Type": "application/json"}


async def test_mailgun_signed_events_are_recorded_and_replays_refused(setup: Setup) -> None:
    hard, soft, complained = sorted(setup.items)[:3]
    failed = mailgun_call(
        mailgun_event(
            hard,
            setup.message_id(hard),
            severity="permanent",
            reason="bounce",
            **{"delivery-status": {"code": 550, "message": "5.1.1 No such user"}},  # type: ignore[arg-type]
        )
    )
    answer = await setup.client.post("/webhooks/mailgun", content=failed, headers=JSON_TYPE)
    assert answer.status_code == 200, answer.text
    assert await setup.item(hard) == ("bounced", "hard")
    assert await setup.suppression(hard) == "hard_bounce"
    temporary = mailgun_call(mailgun_event(soft, setup.message_id(soft), severity="temporary"))
    assert (
        await setup.client.post("/webhooks/mailgun", content=temporary, headers=JSON_TYPE)
    ).status_code == 200
    assert await setup.item(soft) == ("bounced", "soft")
    assert await setup.suppression(soft) is None
    complaint = mailgun_call(mailgun_event(complained, setup.message_id(complained), "complained"))
    assert (
        await setup.client.post("/webhooks/mailgun", content=complaint, headers=JSON_TYPE)
    ).status_code == 200
    assert await setup.suppression(complained) == "complaint"

    before = await setup.state()
    replay = await setup.client.post("/webhooks/mailgun", content=failed, headers=JSON_TYPE)
    assert replay.status_code == 403 and "replay" in replay.json()["detail"]
    victim = sorted(setup.items)[5]
    event = mailgun_event(victim, setup.message_id(victim), severity="permanent")
    for body in [
        mailgun_call(event, key="key-of-someone-else"),
        mailgun_call(event, timestamp=int(time.time()) - 3600),
        json.dumps({"event-data": event}).encode(),  # unsigned
    ]:
        answer = await setup.client.post("/webhooks/mailgun", content=body, headers=JSON_TYPE)
        assert answer.status_code in (401, 403), answer.text
    # the same signed token again, with another event in the body: a replay all the same
    replayed = json.loads(failed)
    replayed["event-data"] = event
    answer = await setup.client.post(
        "/webhooks/mailgun", content=json.dumps(replayed).encode(), headers=JSON_TYPE
    )
    assert answer.status_code == 403
    assert await setup.state() == before


# --- hostile input -------------------------------------------------------------------------


async def test_hostile_bodies_are_refused(setup: Setup) -> None:
    before = await setup.state()
    huge = b"[" + b'{"event": "bounce"},' * 100_000 + b"{}]"
    answer = await setup.client.post("/webhooks/sendgrid", content=huge, headers=JSON_TYPE)
    assert answer.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    answer = await setup.client.post("/webhooks/mailgun", content=chunks(), headers=JSON_TYPE)
    assert answer.status_code == 413
    for path in ("/webhooks/mailgun", "/webhooks/ses"):
        answer = await setup.client.post(
            path, content=b'{"signature": {', headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
    answer = await setup.client.post(
        "/webhooks/mailgun", content=b"\xff\xfe not utf-8", headers=JSON_TYPE
    )
    assert answer.status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = await setup.client.post("/webhooks/mailgun", content=deep, headers=JSON_TYPE)
    assert answer.status_code in (400, 413)
    for path in ("/webhooks/sendgrid", "/webhooks/mailgun"):
        answer = await setup.client.post(
            path,
            content=b"event=failed",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 415
    answer = await setup.client.post(
        "/webhooks/mailgun",
        content=b"{}",
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert answer.status_code == 415
    answer = await setup.client.post("/webhooks/nothing", content=b"{}", headers=JSON_TYPE)
    assert answer.status_code == 404
    answer = await setup.client.get("/webhooks/mailgun")
    assert answer.status_code == 405
    assert await setup.state() == before


async def test_only_configured_providers_answer(installation: Installation) -> None:
    pool = installation.pool
    assert pool is not None
    store = SettingsStore(pool, installation.settings.settings_key)  # nothing configured
    fetcher = Fetcher({})

    async def announce(event: BounceDetected) -> None:
        raise AssertionError("nothing may be announced")

    signer = Signer(b"0123456789abcdef0123456789abcdef")
    webhooks = Webhooks(Recorder(pool, signer), CachedSettings(store), announce, fetcher)
    transport = httpx.ASGITransport(app=create_app(webhooks))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for provider in ("ses", "sendgrid", "postmark", "mailgun"):
            answer = await client.post(f"/webhooks/{provider}", content=b"{}", headers=JSON_TYPE)
            assert answer.status_code == 404, provider
            assert "not configured" in answer.json()["detail"]
    assert fetcher.asked == []


# --- the running service --------------------------------------------------------------------


async def test_the_bounce_processor_serves_the_webhooks(installation: Installation) -> None:
    """`mailroom run bounce_processor` answers on MAILROOM_HTTP_PORT; a provider is enabled by
    a settings change, without a restart."""
    process = installation.start_services("bounce_processor", log_name="webhooks")
    public = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    ops = f"http://127.0.0.1:{process.ops_port}"  # type: ignore[attr-defined]
    event = mailgun_event("someone@elsewhere.test", "<x@elsewhere.test>", severity="permanent")
    async with httpx.AsyncClient(base_url=public, timeout=10) as client:
        answer = await client.post("/webhooks/mailgun", content=b"{}", headers=JSON_TYPE)
        assert answer.status_code == 404 and "not configured" in answer.text
        await change_settings(installation, BounceMailbox(mailgun_signing_key=MAILGUN_KEY))

        async def enabled() -> bool:
            answer = await client.post(
                "/webhooks/mailgun", content=mailgun_call(event), headers=JSON_TYPE
            )
            return answer.status_code == 200

        await wait_for(enabled, 30, "the Mailgun webhook enabled by the settings change")
        forged = await client.post(
            "/webhooks/mailgun", content=mailgun_call(event, key="wrong"), headers=JSON_TYPE
        )
        assert forged.status_code == 403
        metrics = (await client.get(f"{ops}/metrics")).text
    assert (
        'mailroom_bounce_webhook_calls_total{outcome="accepted",provider="mailgun"} 1.0' in metrics
    )
    assert 'outcome="bad_signature",provider="mailgun"' in metrics
    pool = installation.pool
    assert pool is not None
    stored = await pool.fetchval(
        "SELECT value->>'mailgun_signing_key' FROM settings WHERE group_name = 'bounce'"
    )
    assert stored.startswith("enc:v1:") and MAILGUN_KEY not in stored  # like passwords
    # a Message-ID that is not ours: recorded for a person, nothing suppressed
    assert await pool.fetchval("SELECT matched_by IS NULL FROM bounces") is True
    assert await pool.fetchval("SELECT count(*) FROM suppressions") == 0
