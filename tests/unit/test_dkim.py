"""DKIM signing (ours, OpenSSL through `cryptography`) checked by another implementation
(dkimpy), the settings that hold the keys, and `mailroom settings dkim-keygen`'s plan."""

from __future__ import annotations

import time
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st
from mailroom_common.dkim_signing import (
    KeyProblem,
    dkim_signer,
    dns_record,
    dns_record_value,
    load_private_key,
    relaxed_body,
)
from mailroom_common.outbound import sending_for
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.settings import Settings
from mailroom_config.groups import MASK, Invalid, merge, public

from mailroom.bench.content import campaign_content, campaign_row, render_messages
from mailroom.dkim_keygen import KeygenRefused, plan_keygen
from tests.support.dkim import (
    DOMAIN,
    ED25519_SELECTOR,
    RSA_SELECTOR,
    PublishedKeys,
    signature_tags,
)

SETTINGS = Settings(environment="development")
KEYS = PublishedKeys()
SIGNED = {
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    "list-unsubscribe", "list-unsubscribe-post",
}  # fmt: skip


def _campaign(paragraphs: int = 0) -> dict[str, Any]:
    return campaign_row(campaign_content("DKIM", "dkim", paragraphs), campaign_id=7)


def _contacts(n: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"reader{i}@example.com",
            "first_name": f"Reader  {i}",  # two spaces: relaxed canonicalization at work
            "last_name": "Tester",
            "attributes": {},
        }
        for i in range(n)
    ]


def _rendered(n: int = 3, paragraphs: int = 0, **dkim_settings: Any) -> list[bytes]:
    account = SmtpAccount.model_validate(dkim_settings or KEYS.smtp_settings())
    emails = render_messages(SETTINGS, _campaign(paragraphs), _contacts(n), account=account)
    return [email.message.encode("ascii") for email in emails]


def test_every_rendered_message_verifies_with_both_signatures() -> None:
    for message in _rendered(3):
        assert KEYS.verify(message) == [True, True]
        rsa_tags, ed_tags = signature_tags(message, 0), signature_tags(message, 1)
        assert (rsa_tags["a"], rsa_tags["s"], rsa_tags["d"]) == ("rsa-sha256", RSA_SELECTOR, DOMAIN)
        assert (ed_tags["a"], ed_tags["s"]) == ("ed25519-sha256", ED25519_SELECTOR)
        assert rsa_tags["c"] == "relaxed/relaxed"
        assert set(rsa_tags["h"].split(":")) >= SIGNED
        assert dkim.verify(message, dnsfunc=KEYS.dns)


def test_a_message_altered_after_signing_fails() -> None:
    (message,) = _rendered(1)
    head, _, body = message.partition(b"\r\n\r\n")
    altered = {
        "body": head + b"\r\n\r\n" + body.replace(b"Reader", b"Raider", 1),
        "subject": message.replace(b"Subject: What's new", b"Subject: What's old", 1),
        "one-click url": message.replace(b"/unsubscribe/", b"/unsubscribd/", 1),
        "a second List-Unsubscribe": message.replace(
            b"MIME-Version:", b"List-Unsubscribe: <https://evil.example/u>\r\nMIME-Version:", 1
        ),
        "List-Unsubscribe-Post removed": message.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"", 1
        ),
    }
    for what, forged in altered.items():
        assert forged != message, what
        assert KEYS.verify(forged) == [False, False], what


def test_a_key_not_published_fails() -> None:
    other = PublishedKeys()
    (message,) = _rendered(1)
    assert other.verify(message) == [False, False]


@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"a", b"=", b"  \r\n"]), max_size=40))
def test_relaxed_body_canonicalization_is_dkimpys(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_keys_are_checked_and_loaded_once() -> None:
    assert load_private_key(KEYS.rsa_pem) is load_private_key(KEYS.rsa_pem)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(KeyProblem, match="1024 bits"):
        load_private_key(pem)
    with pytest.raises(KeyProblem, match="not an unencrypted PEM"):
        load_private_key("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_message_id_and_return_path_are_aligned_with_from_where_they_can_be() -> None:
    settings = Settings(
        environment="development",
        message_id_domain="ids.example.net",
        bounce_domain="bounces.mailroom.test",
        bounce_domains=["bounces.example.com", "Bounce.Example.org"],
    )
    signing = SmtpAccount.model_validate({**KEYS.smtp_settings(), "dkim_domain": "example.com"})
    aligned = sending_for(signing, "news@mail.example.com", settings)
    assert aligned.dkim is not None and aligned.message_id_domain == "example.com"
    assert aligned.bounce_domain == "bounces.example.com"  # under the DKIM domain
    other = sending_for(signing, "news@example.org", settings)
    assert other.dkim is not None and other.message_id_domain == "ids.example.net"
    assert other.bounce_domain == "Bounce.Example.org"  # under the From domain itself
    elsewhere = sending_for(signing, "news@example.net", settings)
    assert elsewhere.bounce_domain == "bounces.mailroom.test"  # none aligned: the default
    unsigned = sending_for(SmtpAccount(), "news@example.com", settings)
    assert unsigned.dkim is None and unsigned.message_id_domain == "ids.example.net"
    assert unsigned.bounce_domain == "bounces.example.com"


def test_dns_record_is_what_dkimpy_reads() -> None:
    record = dns_record("s1", "example.com", KEYS.rsa_pem)
    name, _, rest = record.partition(" IN TXT ")
    assert name == "s1._domainkey.example.com."
    value = "".join(part.strip('"') for part in rest.split('" "'))
    assert value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # a 2048-bit SubjectPublicKeyInfo
    assert all(len(part.strip('"')) <= 255 for part in rest.split(" "))
    published = PublishedKeys(rsa_pem=KEYS.rsa_pem, extra={RSA_SELECTOR: value})
    (message,) = _rendered(1)
    assert published.verify(message)[0] is True
    ed_record = dns_record("e", "example.com", KEYS.ed25519_pem)
    assert ed_record == f'e._domainkey.example.com. IN TXT "{dns_record_value(KEYS.ed25519_pem)}"'
    assert dns_record_value(KEYS.ed25519_pem).startswith("v=DKIM1; k=ed25519; p=")


def test_signing_cost_per_message() -> None:
    """The micro-benchmark: what signing adds to a ~20 KB message (printed with -s)."""
    (message,) = _rendered(1, paragraphs=60, dkim_domain="")
    rsa_only = dkim_signer(DOMAIN, [(RSA_SELECTOR, KEYS.rsa_pem)])
    both = dkim_signer(DOMAIN, [(RSA_SELECTOR, KEYS.rsa_pem), (ED25519_SELECTOR, KEYS.ed25519_pem)])
    assert rsa_only is not None and both is not None
    costs = {}
    for name, signer in (("rsa-sha256", rsa_only), ("rsa-sha256 + ed25519-sha256", both)):
        rounds = 300
        started = time.perf_counter()
        for _ in range(rounds):
            signer.sign(message)
        costs[name] = (time.perf_counter() - started) / rounds * 1000
    print(
        f"\nDKIM signing of a {len(message):,}-byte message: "
        + ", ".join(f"{name} {ms:.3f} ms" for name, ms in costs.items())
    )
    assert costs["rsa-sha256"] < 5  # about 0.3 ms here; dkimpy's own RSA takes milliseconds


# -- the settings: keys write-only, checked, rotated ----------------------------------------


def test_keys_are_write_only_in_the_api_view() -> None:
    shown = public(SmtpAccount.model_validate(KEYS.smtp_settings()))
    assert shown["dkim_private_key"] == MASK and shown["dkim_ed25519_private_key"] == MASK
    assert shown["dkim_next_private_key"] == ""
    assert "PRIVATE KEY" not in str(shown)


def test_a_bad_key_is_refused_without_being_echoed() -> None:
    with pytest.raises(Invalid) as refused:
        merge("smtp", SmtpAccount(), {**KEYS.smtp_settings(), "dkim_private_key": "oops"}, SETTINGS)
    assert [(p.field, p.problem) for p in refused.value.problems] == [
        ("dkim_private_key", "not an unencrypted PEM private key")
    ]
    swapped = {
        **KEYS.smtp_settings(),
        "dkim_private_key": KEYS.ed25519_pem,
        "dkim_ed25519_private_key": KEYS.rsa_pem,
    }
    with pytest.raises(Invalid) as refused:
        merge("smtp", SmtpAccount(), swapped, SETTINGS)
    assert "PRIVATE" not in str(refused.value)
    assert [p.field for p in refused.value.problems] == [
        "dkim_private_key",
        "dkim_ed25519_private_key",
    ]
    with pytest.raises(Invalid) as refused:
        merge("smtp", SmtpAccount(), {"dkim_domain": "example.com"}, SETTINGS)
    assert [p.field for p in refused.value.problems] == ["dkim_domain"]


def test_rotation_makes_the_next_key_active() -> None:
    current = merge("smtp", SmtpAccount(), KEYS.smtp_settings(), SETTINGS)
    new_pem = PublishedKeys().rsa_pem
    staged = merge(
        "smtp", current, {"dkim_next_selector": "mr2", "dkim_next_private_key": new_pem}, SETTINGS
    )
    assert isinstance(staged, SmtpAccount)
    assert staged.dkim_selector == RSA_SELECTOR  # still signing with the old key
    rotated = merge("smtp", staged, {"dkim_selector": "mr2"}, SETTINGS)
    assert isinstance(rotated, SmtpAccount)
    assert rotated.dkim_selector == "mr2"
    assert rotated.dkim_private_key.get_secret_value() == new_pem
    assert rotated.dkim_previous_selector == RSA_SELECTOR
    assert rotated.dkim_next_selector == "" and not rotated.dkim_next_private_key.get_secret_value()


def test_keygen_plans() -> None:
    fresh = public(SmtpAccount(from_email="news@example.com"))
    first = plan_keygen(fresh, "s1", None, ed25519=False)
    assert first.stored_as == "active" and first.domain == "example.com"
    assert set(first.changes) == {"dkim_domain", "dkim_selector", "dkim_private_key"}
    assert first.record.startswith('s1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=')
    assert "PRIVATE" not in str(first.summary())
    with pytest.raises(KeygenRefused, match="RSA key first"):
        plan_keygen(fresh, "e1", None, ed25519=True)

    signing = public(merge("smtp", SmtpAccount(), first.changes, SETTINGS))
    second = plan_keygen(signing, "s2", None, ed25519=False)
    assert second.stored_as == "next" and set(second.changes) == {
        "dkim_next_selector",
        "dkim_next_private_key",
    }
    ed = plan_keygen(signing, "e1", None, ed25519=True)
    assert ed.stored_as == "ed25519" and "k=ed25519" in ed.record
    with pytest.raises(KeygenRefused, match="in use"):
        plan_keygen(signing, "s1", None, ed25519=False)
    with pytest.raises(KeygenRefused, match=r"signed for example\.com"):
        plan_keygen(signing, "s3", "example.org", ed25519=False)
