"""The TLS context of every connection Mailroom opens to a mail server (SMTP and IMAP)."""

from __future__ import annotations

import ssl


def tls_context(verify: bool) -> ssl.SSLContext:
    """The system's trusted CAs and hostname checks; with `verify` off, any certificate
    (an account set up so on purpose, e.g. a relay with a self-signed certificate)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
