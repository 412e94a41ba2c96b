"""The provider webhooks' pure parts: which URLs may be fetched for SNS, what each provider's
event types mean, and the settings that enable them."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mailroom_bounce_processor.webhooks.events import Refused
from mailroom_bounce_processor.webhooks.mailgun import mailgun_events
from mailroom_bounce_processor.webhooks.postmark import postmark_events
from mailroom_bounce_processor.webhooks.sendgrid import sendgrid_events
from mailroom_bounce_processor.webhooks.ses import ses_events
from mailroom_bounce_processor.webhooks.sns import canonical_string, is_sns_url
from mailroom_common.runtime_settings import BounceMailbox
from mailroom_config.groups import MASK, public, secret_fields
from pydantic import ValidationError


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=1",
        "https://sns.ap-southeast-2.amazonaws.com/x.pem",
    ],
)
def test_sns_hosts_are_allowed(url: str) -> None:
    assert is_sns_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
        "https://evil.test/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com@evil.test/x.pem",
        "https://user@sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com:444/x.pem",
        "https://sns.amazonaws.com/x.pem",
        "https://s3.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com\u3002evil/x.pem",
        "file:///etc/passwd",
        "",
        None,
        42,
    ],
)
def test_other_urls_are_not(url: object) -> None:
    assert not is_sns_url(url)


def test_canonical_string_leaves_out_a_missing_subject() -> None:
    message = {
        "Type": "Notification",
        "Message": "m",
        "MessageId": "1",
        "Timestamp": "t",
        "TopicArn": "arn",
    }
    assert canonical_string(message) == (
        b"Message\nm\nMessageId\n1\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
    )
    message["Subject"] = "s"
    assert b"Subject\ns\nTimestamp" in canonical_string(message)


def test_ses_bounce_types() -> None:
    def kinds(bounce_type: str) -> list[str]:
        message = {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bouncedRecipients": [{"emailAddress": "a@x.test"}, {"emailAddress": "b@x.test"}],
            },
            "mail": {"commonHeaders": {"messageId": "<m@x>"}, "source": "s@x.test"},
        }
        events = ses_events(json.dumps(message), "sns-1")
        assert [e.event_id for e in events] == ["sns-1:0", "sns-1:1"]
        assert {(e.message_id, e.return_path) for e in events} == {("<m@x>", "s@x.test")}
        return [e.kind for e in events]

    assert kinds("Permanent") == ["hard", "hard"]
    assert kinds("Transient") == ["soft", "soft"]
    assert kinds("Undetermined") == ["soft", "soft"]
    assert ses_events(json.dumps({"notificationType": "Delivery", "mail": {}}), "2") == []
    with pytest.raises(Refused):
        ses_events("not json", "3")


def test_sendgrid_event_kinds() -> None:
    def event(**fields: object) -> dict[str, object]:
        return {"email": "a@x.test", "sg_event_id": "id", **fields}

    events = sendgrid_events(
        [
            event(event="bounce", status="5.1.1"),
            event(event="bounce", type="blocked", status="5.7.1"),
            event(event="bounce", status="4.2.2"),
            event(event="dropped", reason="Bounced Address"),
            event(event="dropped", reason="Spam Reporting Address"),
            event(event="dropped", reason="Unsubscribed Address"),
            event(event="spamreport"),
            event(event="delivered"),
            event(event="bounce"),
        ]
    )
    assert [e.kind for e in events] == [
        "hard",
        "soft",
        "soft",
        "hard",
        "complaint",
        "complaint",
        "hard",
    ]
    with pytest.raises(Refused):
        sendgrid_events({"event": "bounce"})


def test_postmark_types() -> None:
    def kind(record: str, bounce_type: str) -> str | None:
        events = postmark_events(
            {"RecordType": record, "Type": bounce_type, "ID": 1, "Email": "a@x.test"}
        )
        assert all(e.message_id is None for e in events)
        return events[0].kind if events else None

    assert kind("Bounce", "HardBounce") == "hard"
    assert kind("Bounce", "SoftBounce") == "soft"
    assert kind("Bounce", "SpamComplaint") == "complaint"
    assert kind("SpamComplaint", "SpamComplaint") == "complaint"
    assert kind("Bounce", "AutoResponder") is None
    assert kind("Delivery", "") is None


def test_mailgun_severities() -> None:
    def kind(**data: object) -> str | None:
        events = mailgun_events({"event-data": {"id": "e", "recipient": "a@x.test", **data}})
        return events[0].kind if events else None

    assert kind(event="failed", severity="permanent") == "hard"
    assert kind(event="failed", severity="temporary") == "soft"
    assert kind(event="complained") == "complaint"
    assert kind(event="delivered") is None


def test_webhook_settings_are_checked() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = p256.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = p256.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    mailbox = BounceMailbox(
        ses_topic_arns=["arn:aws:sns:us-east-1:123456789012:bounces"],
        sendgrid_public_key=base64.b64encode(der).decode(),
        postmark_allowed_ips=["50.31.156.6", "2001:db8::/32", "10.1.2.3/24"],
    )
    assert mailbox.postmark_allowed_ips == ["50.31.156.6/32", "2001:db8::/32", "10.1.2.0/24"]
    assert BounceMailbox(sendgrid_public_key=pem).sendgrid_public_key == pem.strip()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_der = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for bad in [
        {"ses_topic_arns": ["not-an-arn"]},
        {"ses_topic_arns": ["arn:aws:sqs:us-east-1:123456789012:q"]},
        {"sendgrid_public_key": "bm90IGEga2V5"},
        {"sendgrid_public_key": base64.b64encode(rsa_der).decode()},
        {"postmark_allowed_ips": ["example.com"]},
    ]:
        with pytest.raises(ValidationError):
            BounceMailbox.model_validate(bad)


def test_webhook_secrets_are_write_only() -> None:
    assert {"postmark_password", "mailgun_signing_key"} <= set(secret_fields("bounce"))
    view = public(BounceMailbox(postmark_password="p", mailgun_signing_key="k"))
    assert view["postmark_password"] == view["mailgun_signing_key"] == MASK
