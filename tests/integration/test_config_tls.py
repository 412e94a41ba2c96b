"""The actions against real servers speaking TLS, with a test certificate for 127.0.0.1 that
the config service trusts (as a company CA would be: SSL_CERT_FILE) and that does not name
"localhost":

- test-imap against Dovecot, started here with its own configuration in a temporary
  directory (plain IMAP, STARTTLS, IMAPS);
- test-smtp against aiosmtpd with STARTTLS and AUTH, and with implicit TLS."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.dovecot import (
    PASSWORD,
    USER,
    Dovecot,
    make_certificate,
    shared_temp_dir,
    skip_without_dovecot,
)
from tests.support.environment import Installation
from tests.support.ports import free_port
from tests.support.smtp import RecordingHandler

pytestmark = pytest.mark.integration

TOKEN = "imap-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMTP_USER = "mailer"
SMTP_PASSWORD = "Smtp-Pa55-c0ffee"


@pytest.fixture(scope="module")
def certificate() -> Iterator[tuple[Path, Path]]:
    """(certificate, key) in a directory Dovecot's own users can read."""
    with shared_temp_dir("mailroom-tls-") as directory:
        yield make_certificate(directory)


@pytest.fixture(scope="module")
def dovecot(certificate: tuple[Path, Path]) -> Iterator[Dovecot]:
    skip_without_dovecot()
    directory = certificate[0].parent / "dovecot"
    directory.mkdir()
    server = Dovecot(directory, *certificate)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def config(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[Installation, str]]:
    """The config service, trusting the test certificate."""
    install = Installation(admin_token=TOKEN)
    await install.setup()
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(certificate[0])
    try:
        process = install.start_services("config", log_name="config-tls")
        yield install, f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved
        await install.teardown()


async def _check(base: str, **mailbox: object) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as client:
        changed = await client.put("/settings/bounce", json=mailbox)
        assert changed.status_code == 200, changed.text
        answer = await client.post("/actions/test-imap")
        assert answer.status_code == 200, answer.text
        result: dict[str, object] = answer.json()
        assert PASSWORD not in answer.text
        return result


async def test_login_and_select_in_every_security_mode(
    config: tuple[Installation, str], dovecot: Dovecot
) -> None:
    _install, base = config
    account = {"host": "127.0.0.1", "username": USER, "password": PASSWORD, "folder": "INBOX"}
    for security, port in (
        ("none", dovecot.imap_port),
        ("starttls", dovecot.imap_port),
        ("tls", dovecot.imaps_port),
    ):
        result = await _check(base, **account, security=security, port=port)
        assert result["ok"] is True, (security, result)
        assert str(result["reply"]).startswith(f"logged in as {USER}; selected INBOX (0 messages)")
    assert f"user=<{USER}>, method=PLAIN" in dovecot.log()


async def test_failures_say_what_is_wrong(
    config: tuple[Installation, str], dovecot: Dovecot
) -> None:
    install, base = config
    account = {"host": "127.0.0.1", "port": dovecot.imap_port, "security": "none"}
    result = await _check(base, **account, username=USER, password="not-" + PASSWORD)
    assert result == {
        "ok": False,
        "reply": "authentication failed: [AUTHENTICATIONFAILED] Authentication failed.",
    }
    result = await _check(base, **account, password=PASSWORD, folder="No Such Folder")
    assert result["ok"] is False
    assert str(result["reply"]).startswith("cannot select folder 'No Such Folder': NO ")

    # the certificate names 127.0.0.1, not localhost: verification fails, in both TLS modes
    for security, port in (("starttls", dovecot.imap_port), ("tls", dovecot.imaps_port)):
        result = await _check(base, host="localhost", port=port, security=security, folder="INBOX")
        assert result["ok"] is False
        assert str(result["reply"]).startswith(
            f"certificate verification failed for localhost:{port}: Hostname mismatch"
        ), result
    # IMAPS expected where the server speaks plain IMAP
    result = await _check(base, host="127.0.0.1", port=dovecot.imap_port, security="tls")
    assert result["ok"] is False and "TLS handshake" in str(result["reply"])
    assert PASSWORD not in install.log_text()


# --- test-smtp over TLS -----------------------------------------------------------------------


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    if good:
        return AuthResult(success=True)
    return AuthResult(
        success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
    )


@contextmanager
def tls_smtp_server(
    certificate: tuple[Path, Path], *, implicit: bool
) -> Iterator[tuple[Controller, RecordingHandler]]:
    """aiosmtpd with implicit TLS, or with STARTTLS and AUTH required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    handler = RecordingHandler()
    tls: dict[str, Any] = (
        {"ssl_context": context}
        if implicit
        else {
            "tls_context": context,
            "require_starttls": True,
            "auth_required": True,
            "authenticator": _authenticate,
        }
    )
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **tls)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def _send_test(base: str, **account: object) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=90) as client:
        changed = await client.put("/settings/smtp", json=account)
        assert changed.status_code == 200, changed.text
        answer = await client.post("/actions/test-smtp", json={"to": "admin@example.com"})
        assert answer.status_code == 200, answer.text
        assert SMTP_PASSWORD not in answer.text
        result: dict[str, object] = answer.json()
        return result


async def test_test_smtp_with_starttls_auth_and_certificate_checks(
    config: tuple[Installation, str], certificate: tuple[Path, Path]
) -> None:
    install, base = config
    with tls_smtp_server(certificate, implicit=False) as (server, handler):
        account = {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "starttls",
            "username": SMTP_USER,
            "password": SMTP_PASSWORD,
            "verify_certificates": True,
        }
        result = await _send_test(base, **account)
        assert result == {"ok": True, "reply": "250 Message accepted for delivery"}
        assert len(handler.received) == 1

        result = await _send_test(base, password="not-" + SMTP_PASSWORD)
        assert result["ok"] is False
        assert str(result["reply"]).startswith("authentication failed: 535 ")

        # the certificate does not name "localhost": refused while verifying, sent when not
        result = await _send_test(base, host="localhost", password=SMTP_PASSWORD)
        assert result["ok"] is False
        assert str(result["reply"]).startswith(
            f"certificate verification failed for localhost:{server.port}: Hostname mismatch"
        ), result
        result = await _send_test(base, verify_certificates=False)
        assert result["ok"] is True, result
        assert len(handler.received) == 2
    assert SMTP_PASSWORD not in install.log_text()


async def test_test_smtp_with_implicit_tls(
    config: tuple[Installation, str], certificate: tuple[Path, Path]
) -> None:
    _install, base = config
    with tls_smtp_server(certificate, implicit=True) as (server, handler):
        account = {"host": "127.0.0.1", "port": server.port, "username": ""}
        result = await _send_test(base, **account, security="tls", verify_certificates=True)
        assert result == {"ok": True, "reply": "250 Message accepted for delivery"}
        assert handler.recipients() == {"admin@example.com": 1}
        # plain SMTP first where the server expects TLS: both wait, until the timeout
        result = await _send_test(base, security="starttls", timeout_seconds=2)
        assert result == {
            "ok": False,
            "reply": f"no answer from 127.0.0.1:{server.port} within 2 s",
        }
