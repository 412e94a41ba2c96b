"""The SMTP client of the global account, for the outbound sender's pool and the config
service's test email: the account's security mode and certificate checks, one timeout."""

from __future__ import annotations

import aiosmtplib

from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.tls import tls_context


def smtp_client(account: SmtpAccount, timeout: float) -> aiosmtplib.SMTP:
    """A client not yet connected: implicit TLS ("tls"), STARTTLS after EHLO ("starttls")
    or plain ("none"); `timeout` bounds each command."""
    return aiosmtplib.SMTP(
        hostname=account.host,
        port=account.port,
        use_tls=account.security == "tls",
        start_tls=account.security == "starttls",
        tls_context=tls_context(account.verify_certificates)
        if account.security != "none"
        else None,
        timeout=timeout,
    )
