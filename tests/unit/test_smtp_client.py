"""The one SMTP client builder (the sender's pool and the config service's test email): the
account's security mode picks implicit TLS, STARTTLS or plain, and its certificate setting
the TLS context."""

from __future__ import annotations

import ssl

import pytest
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.smtp_client import smtp_client
from mailroom_common.tls import tls_context


@pytest.mark.parametrize(
    ("security", "implicit_tls", "starttls"),
    [("none", False, False), ("tls", True, False), ("starttls", False, True)],
)
def test_each_security_mode_gives_its_client(
    security: str, implicit_tls: bool, starttls: bool
) -> None:
    account = SmtpAccount.model_validate(
        {"host": "smtp.example.test", "port": 2525, "security": security}
    )
    client = smtp_client(account, timeout=7.5)
    assert (client.hostname, client.port, client.timeout) == ("smtp.example.test", 2525, 7.5)
    assert client.use_tls is implicit_tls
    assert client._start_tls_on_connect is starttls  # aiosmtplib keeps start_tls= here
    if security == "none":
        assert client.tls_context is None
    else:
        assert client.tls_context is not None
        assert client.tls_context.verify_mode == ssl.CERT_REQUIRED
        assert client.tls_context.check_hostname


def test_certificates_unchecked_only_when_the_account_says_so() -> None:
    account = SmtpAccount(security="tls", verify_certificates=False)
    context = smtp_client(account, timeout=30).tls_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_the_verified_context_checks_certificate_and_hostname() -> None:
    context = tls_context(verify=True)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
