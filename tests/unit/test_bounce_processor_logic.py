"""The bounce processor's pure parts: IMAP answers, back-off, matching, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailroom_bounce_processor.matching import analyse, signed_match
from mailroom_bounce_processor.processor import backoff_seconds, parse_fetch, parse_search
from mailroom_common.settings import Settings
from mailroom_common.signing import Signer

from tests.support import bounce_messages as bm

ROOT = Path(__file__).resolve().parents[2]


def _signer() -> Signer:
    return Signer(Settings().signing_key.get_secret_value().encode())


def test_imap_answers() -> None:
    assert parse_search([b"3 1 2", b"Search completed (0.001 + 0.000 secs)."]) == [1, 2, 3]
    assert parse_search([b"Search completed (0.001 + 0.000 secs)."]) == []
    lines: list[bytes | bytearray] = [
        b"1 FETCH (UID 7 FLAGS (\\Seen) RFC822 {5}",
        bytearray(b"hello"),
        b")",
        b"2 FETCH (RFC822 {3}",
        bytearray(b"abc"),
        b" UID 9)",
        b"Fetch completed.",
    ]
    assert list(parse_fetch(lines)) == [(7, b"hello"), (9, b"abc")]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_seconds(50) == 60


def test_signed_evidence_names_the_item() -> None:
    signer = _signer()
    verp = signer.verp_address("42", "bounces.mailroom.test")
    report = analyse(bm.dsn(verp, "someone@example.net")).report
    match = signed_match(report, bm.dsn(verp, "someone@example.net"), signer)
    assert match is not None and (match.item_ref, match.matched_by) == ("42", "verp")
    forged = verp.replace("bounces+42-", "bounces+43-")
    forged_raw = bm.dsn(forged, "x@example.net")
    assert signed_match(analyse(forged_raw).report, forged_raw, signer) is None
    original = (
        f"From: news@mailroom.test\r\nTo: someone@example.net\r\n"
        f"Message-ID: {signer.message_id('42', 'c5', 'mailroom.test')}\r\n\r\nhi\r\n"
    ).encode()
    raw = bm.dsn("postmaster@mailroom.test", "someone@example.net", original=original)
    match = signed_match(analyse(raw).report, raw, signer)
    assert match is not None and (match.item_ref, match.matched_by) == ("42", "message_id")
    autoresponder_verp = signer.verp_address("a7", "bounces.mailroom.test")
    raw = bm.dsn(autoresponder_verp, "someone@example.net")
    match = signed_match(analyse(raw).report, raw, signer)
    assert match is not None and (match.item_ref, match.matched_by) == ("a7", "verp")


def test_malformed_messages_are_unreadable_not_errors() -> None:
    for name, raw in bm.malformed().items():
        analysis = analyse(raw)
        assert analysis.unreadable, name
        assert len(analysis.digest) == 64
    assert analyse(bm.out_of_office("a@example.net", "b@example.net")).unreadable is None


def test_cli_bounce_parse_on_a_file_and_on_stdin(tmp_path: Path) -> None:
    verp = _signer().verp_address("1234", "bounces.mailroom.test")
    hard = tmp_path / "hard.eml"
    hard.write_bytes(bm.dsn(verp, "gone@example.net"))
    away = tmp_path / "away.eml"
    away.write_bytes(bm.out_of_office("someone@example.net", "news@mailroom.test"))
    command = [sys.executable, "-m", "mailroom", "bounce", "parse"]
    done = subprocess.run(
        [*command, str(hard), str(away)], capture_output=True, check=True, cwd=ROOT
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert lines == [
        {
            "file": str(hard),
            "is_bounce": True,
            "recipients": ["gone@example.net"],
            "kind": "hard",
            "action": "failed",
            "status": "5.1.1",
            "item_id": 1234,
        },
        {
            "file": str(away),
            "is_bounce": False,
            "recipients": [],
            "kind": None,
            "action": None,
            "status": None,
            "item_id": None,
        },
    ]
    soft = bm.dsn("postmaster@mailroom.test", "full@example.net", "4.2.2", "delayed", "later")
    done = subprocess.run([*command, "-"], input=soft, capture_output=True, check=True, cwd=ROOT)
    line = json.loads(done.stdout)
    assert line["file"] == "-" and line["is_bounce"] is True
    assert (line["kind"], line["action"], line["status"]) == ("soft", "delayed", "4.2.2")
    assert line["item_id"] is None
    missing = subprocess.run([*command, str(tmp_path / "nope.eml")], capture_output=True, cwd=ROOT)
    assert missing.returncode == 2


def test_cli_bounce_parse_survives_a_non_ascii_verp_signature(tmp_path: Path) -> None:
    forged = tmp_path / "forged.eml"
    forged.write_bytes(bm.dsn("bounces+12-\u00e9\u00e9\u00e9@b.example.test", "x@example.net"))
    done = subprocess.run(
        [sys.executable, "-m", "mailroom", "bounce", "parse", str(forged)],
        capture_output=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    line = json.loads(done.stdout)
    assert line["is_bounce"] is True and line["item_id"] is None


def test_only_signed_evidence_matches() -> None:
    signer = _signer()
    original = (
        b"From: news@mailroom.test\r\nTo: someone@example.net\r\n"
        b"Message-ID: <c5.42.AAAAAAAA@mailroom.test>\r\nX-Mailroom-Item: 42\r\n\r\nhi\r\n"
    )
    raw = bm.dsn("postmaster@mailroom.test", "someone@example.net", original=original)
    assert signed_match(analyse(raw).report, raw, signer) is None
