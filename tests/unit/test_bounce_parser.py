"""Bounce parser: hand-written messages plus the score on the shared corpus."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from mailroom_bounce_processor.parser import BounceReport, parse_bounce

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpora" / "bounces"


def _msg(text: str) -> bytes:
    return text.lstrip("\n").replace("\n", "\r\n").encode("utf-8")


DSN_FAILED_AND_DELAYED = _msg("""
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: bounces+item-42=example.org@mailroom.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

<Gone@Example.org>: host mx.example.org said: 550 5.1.1 user unknown

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; Gone@Example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected

Final-Recipient: rfc822; slow@example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; 421 4.4.1 connection timed out
Will-Retry-Until: Tue, 2 Jan 2024 10:00:00 +0000

--BOUNDARY
Content-Type: message/rfc822

From: News <news@mailroom.example.com>
To: gone@example.org
Subject: Our news
Message-ID: <item-42@mailroom.example.com>
X-Mailroom-Item: 42

Hello
--BOUNDARY--
""")

DSN_DELAYED_ONLY = _msg("""
From: MAILER-DAEMON@mx.example.net
To: sender@example.com
Subject: Delayed Mail (still being retried)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered yet; we will keep trying.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; slow@example.org
Action: delayed
Status: 4.4.7

--B--
""")

DSN_SUCCESS = _msg("""
From: MAILER-DAEMON@mx.example.net
To: sender@example.com
Subject: Successful Mail Delivery Report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message was successfully delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; happy@example.org
Action: delivered
Status: 2.0.0

--B--
""")

EXIM_BOUNCE = _msg("""
Return-path: <>
Envelope-to: bounces+7=example.org@mailroom.example.com
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: bounces+7=example.org@mailroom.example.com
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: nobody-here@example.org
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody-here@example.org
    SMTP error from remote mail server after RCPT TO:<nobody-here@example.org>:
    host mx.example.org [192.0.2.1]: 550 5.1.1 No such user here

------ This is a copy of the message, including all the headers. ------

Return-path: <bounces+7=example.org@mailroom.example.com>
From: News <news@mailroom.example.com>
To: nobody-here@example.org
Subject: Our news
Message-Id: <item-7@mailroom.example.com>

Hello
""")

QMAIL_SOFT = _msg("""
From: MAILER-DAEMON@mail.example.net
To: sender@example.com
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.

<full@example.org>:
Remote host said: 452 4.2.2 Mailbox full, try again later

--- Below this line is a copy of the message.

From: sender@example.com
To: full@example.org
Subject: hi
""")

SMTP_REPLY_IN_BODY = _msg("""
From: postmaster@example.net
To: sender@example.com
Subject: Returned mail: see transcript for details

The following message could not be delivered.

   ----- Transcript of session follows -----
550 5.1.1 <unknown-user@example.org>: user unknown
""")

VACATION = _msg("""
From: Jane Doe <jane@example.org>
To: news@mailroom.example.com
Subject: Out of Office: Our news
Auto-Submitted: auto-replied
X-Autoreply: yes
Precedence: auto_reply

I am out of the office until Monday and will reply when I am back.
""")

VACATION_NO_HEADERS = _msg("""
From: Jane Doe <jane@example.org>
To: news@mailroom.example.com
Subject: Automatic reply: Our news

Thank you for your message. I am currently on vacation.
""")

READ_RECEIPT = _msg("""
From: Jane Doe <jane@example.org>
To: news@mailroom.example.com
Subject: Read: Our news
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="R"

--R
Content-Type: text/plain

Your message was displayed.

--R
Content-Type: message/disposition-notification

Final-Recipient: rfc822; jane@example.org
Disposition: manual-action/MDN-sent-manually; displayed

--R--
""")

ARF_REPORT = _msg("""
From: Feedback Loop <fbl@isp.example>
To: abuse@mailroom.example.com
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces+9=example.org@mailroom.example.com>
Original-Rcpt-To: <Complainer@Example.org>
Arrival-Date: Thu, 8 Mar 2024 14:00:00 EST

--F
Content-Type: message/rfc822

From: News <news@mailroom.example.com>
To: complainer@example.org
Subject: Our news
Message-ID: <item-9@mailroom.example.com>

Hello
--F--
""")

ORDINARY = _msg("""
From: Bob <bob@example.org>
To: news@mailroom.example.com
Subject: Question about your newsletter

Hi, how do I change my address? My old one bob@old.example.org is gone.
""")

QUOTING_AN_ERROR = _msg("""
From: Bob <bob@example.org>
To: news@mailroom.example.com
Subject: Re: Our news

I forwarded your newsletter to alice@example.org but it could not be delivered:
the server said 550 5.1.1 user unknown. Can you check?
""")

BROKEN_MIME = _msg("""
From: MAILER-DAEMON@mx.example.net
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="declared"

--actually-used
Content-Type: text/plain

<lost@example.org>: host mx.example.org said: 550 5.1.1 user unknown

--actually-used
Content-Type: message/delivery-status

Final-Recipient: rfc822; lost@example.org
Action: failed
Status: 5.1.1

--actually-used--
""")


def _assert_report(report: BounceReport) -> None:
    assert isinstance(report, BounceReport)
    assert isinstance(report.reason, str) and report.reason


def test_dsn_failed_and_delayed() -> None:
    report = parse_bounce(DSN_FAILED_AND_DELAYED)
    assert report.is_bounce
    assert report.kind == "hard"
    assert report.action == "failed"
    assert report.status == "5.1.1"
    by_address = {r.address: r for r in report.recipients}
    assert set(by_address) == {"gone@example.org", "slow@example.org"}
    assert by_address["gone@example.org"].kind == "hard"
    assert by_address["gone@example.org"].action == "failed"
    assert "Recipient address rejected" in (by_address["gone@example.org"].diagnostic or "")
    assert by_address["slow@example.org"].kind == "soft"
    assert by_address["slow@example.org"].action == "delayed"
    assert by_address["slow@example.org"].status == "4.4.1"
    assert report.original_message_id == "<item-42@mailroom.example.com>"
    assert report.original_headers["X-Mailroom-Item"] == "42"
    assert report.verp_address == "bounces+item-42=example.org@mailroom.example.com"


def test_dsn_delayed_only_is_soft_not_final() -> None:
    report = parse_bounce(DSN_DELAYED_ONLY)
    assert report.is_bounce
    assert (report.kind, report.action, report.status) == ("soft", "delayed", "4.4.7")


def test_success_dsn_is_not_a_bounce() -> None:
    report = parse_bounce(DSN_SUCCESS)
    assert not report.is_bounce
    assert report.kind is None
    assert report.recipients == ()


def test_exim_bounce() -> None:
    report = parse_bounce(EXIM_BOUNCE)
    assert report.is_bounce
    assert report.kind == "hard"
    assert [r.address for r in report.recipients] == ["nobody-here@example.org"]
    assert report.recipients[0].status == "5.1.1"
    assert report.original_message_id == "<item-7@mailroom.example.com>"
    assert report.verp_address == "bounces+7=example.org@mailroom.example.com"


def test_qmail_transient_status_is_soft() -> None:
    report = parse_bounce(QMAIL_SOFT)
    assert report.is_bounce
    assert [r.address for r in report.recipients] == ["full@example.org"]
    assert report.kind == "soft"
    assert report.status == "4.2.2"


def test_smtp_reply_line_in_body() -> None:
    report = parse_bounce(SMTP_REPLY_IN_BODY)
    assert report.is_bounce
    assert [r.address for r in report.recipients] == ["unknown-user@example.org"]
    assert report.kind == "hard"
    assert report.status == "5.1.1"


@pytest.mark.parametrize("raw", [VACATION, VACATION_NO_HEADERS], ids=["headers", "subject"])
def test_vacation_auto_reply_is_not_a_bounce(raw: bytes) -> None:
    report = parse_bounce(raw)
    assert not report.is_bounce
    assert report.kind is None
    assert "not a bounce" in report.reason


def test_read_receipt_is_not_a_bounce() -> None:
    report = parse_bounce(READ_RECEIPT)
    assert not report.is_bounce
    assert report.kind is None


def test_ordinary_mail_is_not_a_bounce() -> None:
    report = parse_bounce(ORDINARY)
    assert not report.is_bounce
    assert report.recipients == ()


def test_person_quoting_an_error_is_not_a_bounce() -> None:
    report = parse_bounce(QUOTING_AN_ERROR)
    assert not report.is_bounce
    assert report.recipients == ()


def test_arf_is_a_complaint() -> None:
    report = parse_bounce(ARF_REPORT)
    assert not report.is_bounce
    assert report.kind == "complaint"
    assert [r.address for r in report.recipients] == ["complainer@example.org"]
    assert report.original_message_id == "<item-9@mailroom.example.com>"


def test_broken_mime_boundary_is_repaired() -> None:
    report = parse_bounce(BROKEN_MIME)
    _assert_report(report)
    assert report.is_bounce
    assert [r.address for r in report.recipients] == ["lost@example.org"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02\xff\xfe",
        b"not a message at all",
        b"Content-Type: multipart/mixed\r\n\r\n--\r\n--\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: "
        b"message/delivery-status\r\n\r\nAction: failed\r\n--x",
        b"Subject: =?utf-8?B?!!!invalid?=\r\nContent-Type: text/plain; charset=no-such\r\n\r\nhi",
        b"From: MAILER-DAEMON\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@not base64@@@",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    _assert_report(parse_bounce(raw))


def test_undeclared_8bit_bytes() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        b"Subject: Unzustellbar: Gr\xfc\xdfe \xe9t\xe9\r\n"
        b"To: sender@example.com\r\n\r\n"
        b"Die Nachricht konnte nicht zugestellt werden \xe4\xf6\xfc.\r\n\r\n"
        b"<m\xfcller@example.org>: 550 5.1.1 user unknown\r\n"
        b"<plain@example.org>: host mx.example.org said: 550 5.1.1 user unknown \xff\xfe\r\n"
    )
    report = parse_bounce(raw)
    _assert_report(report)
    assert report.is_bounce
    assert "plain@example.org" in {r.address for r in report.recipients}


def test_twenty_megabyte_message() -> None:
    head = DSN_FAILED_AND_DELAYED.replace(b"--BOUNDARY--", b"")
    filler = (b"x" * 998 + b"\r\n") * (20 * 1024 * 1024 // 1000)
    raw = head + b"--BOUNDARY\r\nContent-Type: text/plain\r\n\r\n" + filler + b"--BOUNDARY--\r\n"
    assert len(raw) > 20 * 1024 * 1024
    started = time.monotonic()
    report = parse_bounce(raw)
    assert time.monotonic() - started < 30
    assert report.is_bounce
    assert "gone@example.org" in {r.address for r in report.recipients}


def test_two_hundred_deep_nested_rfc822() -> None:
    inner = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: core\r\n\r\nbody\r\n"
    for depth in range(200):
        inner = (
            b"From: MAILER-DAEMON@example.net\r\nSubject: Undeliverable "
            + str(depth).encode()
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
            + inner
        )
    _assert_report(parse_bounce(inner))


def test_deeply_nested_multiparts() -> None:
    body = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for depth in range(300):
        b = f"b{depth}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + b
            + b"\r\n\r\n--"
            + b
            + b"\r\n"
            + body
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    _assert_report(parse_bounce(b"From: x@example.org\r\n" + body))


def _load_scorer() -> ModuleType:
    path = REPO / "scripts" / "score_bounces.py"
    spec = importlib.util.spec_from_file_location("score_bounces", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_corpus_scores() -> None:
    if not (CORPUS / "README.md").is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    scorer = _load_scorer()
    per_source = scorer.score_corpus(CORPUS)
    overall = scorer.total(per_source)
    shares = {m: overall.figures[m].share for m in scorer.METRICS}
    print("\nbounce parser on the shared corpus:")
    for source in [*per_source, overall]:
        figures = ", ".join(
            f"{m} {source.figures[m].share:.1%}" for m in scorer.METRICS if source.figures[m].total
        )
        print(f"  {source.name}: {figures}")
    assert all(share >= 0.97 for share in shares.values()), shares
