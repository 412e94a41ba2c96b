"""Connecting to the bounce mailbox (IMAP) with aioimaplib: implicit TLS, STARTTLS or plain,
certificates verified unless the settings say otherwise, and failures in plain words that
never hold the password. Used by the config service's test-imap and the bounce processor."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiosmtplib
from aioimaplib import aioimaplib

from mailroom_common.runtime_settings import BounceMailbox
from mailroom_common.tls import tls_context


def causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_failure(error: BaseException, host: str, port: int, seconds: float) -> str:
    """A connection-level failure in plain words."""
    where = f"{host}:{port}"
    for cause in causes(error):
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


def scrub(text: str, secret: str) -> str:
    return text.replace(secret, "********") if secret else text


def reply_text(lines: list[bytes]) -> str:
    return " ".join(
        bytes(line).decode(errors="replace").strip() for line in lines if bytes(line).strip()
    )


def quoted(mailbox: str) -> str:
    escaped = mailbox.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def starttls(client: aioimaplib.IMAP4, host: str, context: ssl.SSLContext) -> str | None:
    """STARTTLS on an open IMAP connection (aioimaplib has no helper); None when done."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        return "the server does not offer STARTTLS"
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), client.timeout)
    if response.result != "OK":
        return f"STARTTLS refused: {response.result} {reply_text(response.lines)}"
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, context, server_hostname=host
    )
    await asyncio.wait_for(protocol.capability(), client.timeout)  # RFC 3501: ask again
    return None


class MailboxError(Exception):
    """Connecting, logging in or selecting failed; the message is safe to show and log.

    `stage` is "connect", "login" or "select"; `reply` the server's words (for login/select)."""

    def __init__(self, message: str, stage: str, reply: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.reply = reply


def close(client: aioimaplib.IMAP4) -> None:
    """Drop the connection at once (no LOGOUT round trip)."""
    client._client_task.cancel()  # still connecting when the time ran out
    transport = client.protocol.transport
    if transport is not None:
        transport.close()


@dataclass
class OpenMailbox:
    client: aioimaplib.IMAP4
    exists: int | None  # messages in the folder when selected
    select_reply: str  # the server's last words to SELECT
    capabilities: frozenset[str]


async def open_mailbox(
    mailbox: BounceMailbox,
    seconds: float = 15.0,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> OpenMailbox:
    """Connect, log in and select the folder; `on_lost` is called when the connection drops
    (aioimaplib does not fail the commands waiting for an answer then).

    Raises MailboxError (password scrubbed) when any step fails."""
    password = mailbox.password.get_secret_value()
    context = tls_context(verify=mailbox.verify_certificates)
    where = (mailbox.host, mailbox.port, seconds)
    try:
        if mailbox.security == "tls":
            client = aioimaplib.IMAP4_SSL(
                mailbox.host,
                mailbox.port,
                timeout=seconds,
                ssl_context=context,
            )
        else:
            client = aioimaplib.IMAP4(mailbox.host, mailbox.port, timeout=seconds)
        client.protocol.conn_lost_cb = on_lost  # IMAP4_SSL does not take it as an argument
    except (OSError, ValueError) as error:
        raise MailboxError(scrub(describe_failure(error, *where), password), "connect") from None
    try:
        async with asyncio.timeout(seconds * 2):
            await client.wait_hello_from_server()
            if mailbox.security == "starttls":
                refused = await starttls(client, mailbox.host, context)
                if refused is not None:
                    raise MailboxError(refused, "connect")
            login = await client.login(mailbox.username, password)
            if login.result != "OK":
                reply = scrub(reply_text(login.lines), password)
                raise MailboxError(f"authentication failed: {reply}", "login", reply)
            selected = await client.select(quoted(mailbox.folder))
            if selected.result != "OK":
                reply = reply_text(selected.lines)
                raise MailboxError(
                    f"cannot select folder {mailbox.folder!r}: {selected.result} {reply}",
                    "select",
                    reply,
                )
            return OpenMailbox(
                client,
                aioimaplib.extract_exists(selected),
                reply_text(selected.lines[-1:]),
                frozenset(str(c).upper() for c in client.protocol.capabilities),
            )
    except MailboxError:
        close(client)
        raise
    except aioimaplib.CommandTimeout:
        close(client)
        message = f"no answer from {mailbox.host}:{mailbox.port} within {seconds:g} s"
        raise MailboxError(message, "connect") from None
    except (OSError, TimeoutError) as error:  # before ValueError: a certificate error is both
        close(client)
        raise MailboxError(scrub(describe_failure(error, *where), password), "connect") from None
    except (aioimaplib.AioImapException, ValueError) as error:
        close(client)
        raise MailboxError(scrub(f"IMAP error: {error}", password), "connect") from None
    except BaseException:
        close(client)
        raise


async def logout(client: aioimaplib.IMAP4) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.logout(), 5)
    close(client)
