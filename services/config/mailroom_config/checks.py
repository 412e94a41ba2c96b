"""The two actions: a test email through the global SMTP account, a login to the bounce
mailbox. Each answers (ok, reply): the server's reply, or what went wrong in words an
administrator can act on, never with the password in it."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import errno
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

import aiosmtplib
from aioimaplib import aioimaplib
from mailroom_common.runtime_settings import BounceMailbox, SmtpAccount

MAX_SECONDS = 30.0  # an action never waits longer than this, whatever the account's timeout


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reply: str


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_failure(error: BaseException, host: str, port: int, seconds: float) -> str:
    """A connection-level failure in plain words."""
    where = f"{host}:{port}"
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verification failed for {where}: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return (
                f"TLS handshake with {where} failed ({cause.reason or cause}): does the server"
                " speak that security mode on this port?"
            )
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {where} (nothing listens on that port?)"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {host!r}: {cause.strerror}"
        if isinstance(cause, TimeoutError | asyncio.TimeoutError | aiosmtplib.SMTPTimeoutError):
            return f"no answer from {where} within {seconds:g} s"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"cannot reach {where}: {cause.strerror}"
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return f"{where} closed the connection"
    return str(error) or type(error).__name__


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "********") if secret else text


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def test_message(account: SmtpAccount, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((account.from_name, account.from_email))
    message["To"] = to
    message["Subject"] = "Mailroom SMTP test"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=account.from_email.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "This is a test email from Mailroom's config service.\n\n"
        f"It went through the global SMTP account ({account.host}:{account.port},"
        f" security {account.security}), the one every campaign and autoresponder uses.\n"
    )
    return message


async def send_test_email(account: SmtpAccount, to: str) -> CheckResult:
    password = account.password.get_secret_value()
    seconds = min(account.timeout_seconds, MAX_SECONDS)
    client = aiosmtplib.SMTP(
        hostname=account.host,
        port=account.port,
        use_tls=account.security == "tls",
        start_tls=account.security == "starttls",
        tls_context=_tls_context(account.verify_certificates)
        if account.security != "none"
        else None,
        timeout=seconds,
    )
    try:
        async with asyncio.timeout(seconds * 2):
            await client.connect()
            if account.username:
                await client.login(account.username, password)
            await client.mail(account.from_email)
            await client.rcpt(to)
            response = await client.data(
                test_message(account, to).as_bytes(policy=email.policy.SMTP)
            )
            with contextlib.suppress(Exception):
                await client.quit()
    except aiosmtplib.SMTPConnectResponseError as error:
        reply = f"the server refused the connection: {error.code} {error.message}"
    except aiosmtplib.SMTPAuthenticationError as error:
        reply = f"authentication failed: {error.code} {error.message}"
    except aiosmtplib.SMTPRecipientRefused as error:
        reply = f"the server refused the recipient {to}: {error.code} {error.message}"
    except aiosmtplib.SMTPSenderRefused as error:
        reply = f"the server refused the sender {account.from_email}: {error.code} {error.message}"
    except aiosmtplib.SMTPDataError as error:
        reply = f"the server refused the message: {error.code} {error.message}"
    except aiosmtplib.SMTPResponseException as error:
        reply = f"{error.code} {error.message}"
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        reply = describe_failure(error, account.host, account.port, seconds)
    else:
        return CheckResult(True, _scrub(f"{response.code} {response.message}", password))
    finally:
        client.close()
    return CheckResult(False, _scrub(reply, password))


def _text(lines: list[bytes]) -> str:
    return " ".join(line.decode(errors="replace").strip() for line in lines if line.strip())


async def _starttls(client: aioimaplib.IMAP4, host: str, context: ssl.SSLContext) -> str | None:
    """STARTTLS on an open IMAP connection (aioimaplib has no helper); None when done."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        return "the server does not offer STARTTLS"
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), client.timeout)
    if response.result != "OK":
        return f"STARTTLS refused: {response.result} {_text(response.lines)}"
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, context, server_hostname=host
    )
    await asyncio.wait_for(protocol.capability(), client.timeout)  # RFC 3501: ask again
    return None


def _quoted(mailbox: str) -> str:
    escaped = mailbox.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def check_mailbox(mailbox: BounceMailbox) -> CheckResult:
    """Connect, log in, select the folder, log out."""
    password = mailbox.password.get_secret_value()
    seconds = MAX_SECONDS / 2
    # BounceMailbox has no verify_certificates (yet): verify unless the model says otherwise
    context = _tls_context(verify=getattr(mailbox, "verify_certificates", True))
    client: aioimaplib.IMAP4
    try:
        async with asyncio.timeout(seconds * 2):
            if mailbox.security == "tls":
                client = aioimaplib.IMAP4_SSL(
                    mailbox.host, mailbox.port, timeout=seconds, ssl_context=context
                )
            else:
                client = aioimaplib.IMAP4(mailbox.host, mailbox.port, timeout=seconds)
            try:
                await client.wait_hello_from_server()
                if mailbox.security == "starttls":
                    refused = await _starttls(client, mailbox.host, context)
                    if refused is not None:
                        return CheckResult(False, refused)
                login = await client.login(mailbox.username, password)
                if login.result != "OK":
                    reply = _text(login.lines)
                    return CheckResult(False, _scrub(f"authentication failed: {reply}", password))
                selected = await client.select(_quoted(mailbox.folder))
                if selected.result != "OK":
                    reply = _text(selected.lines)
                    return CheckResult(
                        False, f"cannot select folder {mailbox.folder!r}: {selected.result} {reply}"
                    )
                messages = aioimaplib.extract_exists(selected)
                count = "?" if messages is None else str(messages)
                reply = (
                    f"logged in as {mailbox.username}; selected {mailbox.folder}"
                    f" ({count} messages): {_text(selected.lines[-1:])}"
                )
                with contextlib.suppress(Exception):
                    await client.logout()
                return CheckResult(True, _scrub(reply, password))
            finally:
                client._client_task.cancel()  # still connecting when the time ran out
                transport = client.protocol.transport
                if transport is not None:
                    transport.close()
    except aioimaplib.CommandTimeout:
        reply = f"no answer from {mailbox.host}:{mailbox.port} within {seconds:g} s"
    except (OSError, TimeoutError) as error:  # before ValueError: a certificate error is both
        reply = describe_failure(error, mailbox.host, mailbox.port, seconds)
    except (aioimaplib.AioImapException, ValueError) as error:
        reply = f"IMAP error: {error}"
    return CheckResult(False, _scrub(reply, password))
