"""Bounces, complaints and other mail as recipient servers send them to the bounce mailbox."""

from __future__ import annotations

import uuid

from mailroom_bounce_processor.matching import header_block

MTA = "mx.example.org"


def _message_id() -> str:
    return f"<{uuid.uuid4().hex}@{MTA}>"


def headers_of(message: bytes) -> bytes:
    return header_block(message).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dsn(
    to: str,
    recipient: str,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    original: bytes | None = None,
) -> bytes:
    """An RFC 3464 delivery status notification (Postfix-like), the original's headers
    returned when given."""
    diag = diagnostic.format(rcpt=recipient)
    subject = "Delayed Mail (still being retried)" if action == "delayed" else "Undelivered Mail"
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{MTA}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        f"Message-ID: {_message_id()}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BND"\r\n'
        "\r\n"
        "--BND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host {MTA}.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: {diag}\r\n\r\n"
        "--BND\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {MTA}\r\n"
        f"Arrival-Date: Mon, 3 Nov 2025 09:59:59 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; {MTA}\r\n"
        f"Diagnostic-Code: smtp; {diag}\r\n\r\n"
    ]
    raw = "".join(parts).encode()
    if original is not None:
        raw += b"--BND\r\nContent-Type: text/rfc822-headers\r\n\r\n" + headers_of(original)
        raw += b"\r\n\r\n"
    return raw + b"--BND--\r\n"


def multi_dsn(to: str, recipients: list[str]) -> bytes:
    """One DSN reporting several failed recipients (as an MTA does for one envelope)."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{r}>: User unknown\r\n\r\n"
        for r in recipients
    )
    return (
        f"From: MAILER-DAEMON@{MTA}\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
        f"Message-ID: {_message_id()}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {MTA}\r\n\r\n{blocks}--B--\r\n"
    ).encode()


def complaint(recipient: str, original: bytes) -> bytes:
    """An ARF (RFC 5965) abuse report about one of our emails."""
    return (
        (
            "From: Feedback Loop <fbl@isp.example.net>\r\n"
            "To: abuse-reports@mailroom.test\r\n"
            "Subject: Abuse report\r\n"
            "Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
            f"Message-ID: {_message_id()}\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"\r\n'
            "\r\n"
            "--ARF\r\n"
            "Content-Type: text/plain\r\n\r\n"
            "This is an email abuse report for an email message received from you.\r\n\r\n"
            "--ARF\r\n"
            "Content-Type: message/feedback-report\r\n\r\n"
            "Feedback-Type: abuse\r\n"
            "User-Agent: ISP-FBL/1.0\r\n"
            "Version: 1\r\n"
            f"Original-Rcpt-To: {recipient}\r\n"
            "Arrival-Date: Mon, 3 Nov 2025 09:00:00 +0000\r\n\r\n"
            "--ARF\r\n"
            "Content-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        + headers_of(original)
        + b"\r\n\r\n--ARF--\r\n"
    )


def out_of_office(sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        "Subject: Out of Office: News\r\n"
        "Date: Mon, 3 Nov 2025 10:00:00 +0000\r\n"
        f"Message-ID: {_message_id()}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "X-Autoreply: yes\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "I am out of the office until Monday and will read your message then.\r\n"
    ).encode()


def malformed() -> dict[str, bytes]:
    """Messages no parser should choke on, none of them a bounce."""
    broken = (
        b"From: someone@example.net\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
        b"--XYZ\r\nContent-Type: text/plain\r\n\r\nhello, the closing boundary never comes\r\n"
    )
    eight_bit = (
        b"From: m\xfcller@example.net\r\nSubject: Gr\xfc\xdfe \xe9t\xe9\r\n\r\n"
        b"Hallo \xe4\xf6\xfc \xff\xfe, wie geht es?\r\n"
    )
    filler = (b"y" * 998 + b"\r\n") * (20 * 1024 * 1024 // 1000 + 10)
    huge = b"From: big@example.net\r\nSubject: a big one\r\n\r\n" + filler
    nested = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: core\r\n\r\nbody\r\n"
    for depth in range(200):
        nested = (
            b"From: a@example.org\r\nSubject: forwarded "
            + str(depth).encode()
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
            + nested
        )
    return {"broken_mime": broken, "eight_bit": eight_bit, "huge": huge, "nested": nested}
