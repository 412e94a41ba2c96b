"""The two actions: a test email through the global SMTP account, a login to the bounce
mailbox. Each answers (ok, reply): the server's reply, or what went wrong in words an
administrator can act on, never with the password in it."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

import aiosmtplib
from mailroom_common.imap import (
    MailboxError,
    describe_failure,
    logout,
    open_mailbox,
    scrub,
)
from mailroom_common.runtime_settings import BounceMailbox, SmtpAccount
from mailroom_common.smtp_client import smtp_client
from mailroom_common.smtp_replies import scrub_reply

MAX_SECONDS = 30.0  # an action never waits longer than this, whatever the account's timeout


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reply: str


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
    client = smtp_client(account, seconds)
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
        return CheckResult(
            True, scrub_reply(f"{response.code} {response.message}", account.username, password)
        )
    finally:
        client.close()
    return CheckResult(False, scrub_reply(reply, account.username, password))


async def check_mailbox(mailbox: BounceMailbox) -> CheckResult:
    """Connect, log in, select the folder, log out."""
    try:
        opened = await open_mailbox(mailbox, seconds=MAX_SECONDS / 2)
    except MailboxError as error:
        return CheckResult(False, str(error))
    messages = "?" if opened.exists is None else str(opened.exists)
    reply = (
        f"logged in as {mailbox.username}; selected {mailbox.folder}"
        f" ({messages} messages): {opened.select_reply}"
    )
    await logout(opened.client)
    return CheckResult(True, scrub(reply, mailbox.password.get_secret_value()))
