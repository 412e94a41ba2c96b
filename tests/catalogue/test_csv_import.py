"""Bad-input catalogue: `mailroom contacts import FILE --list L`, run as an operator runs it.

A bad line is reported (file:line: reason) and the good lines are imported; a file that
cannot be imported as a whole is refused before anything is written, exit code 2 and one
sentence; never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.catalogue.cases import Case, case_ids
from tests.support.cli import run_mailroom
from tests.support.environment import Installation

pytestmark = pytest.mark.integration

HEADER = b"email,first_name,last_name,city\n"
GOOD_ROWS = b"ann@example.com,Ann,Archer,Oslo\nbob@example.com,Bob,Baker,Rome\n"
GOOD = {"ann@example.com", "bob@example.com"}


@dataclass(frozen=True)
class CsvCase(Case):
    content: bytes = b""
    exit_code: int = 0
    # exit 0: the bad lines reported, {line: part of the reason}; else part of the refusal
    bad_lines: dict[int, str] = field(default_factory=dict)
    refusal: str = ""
    imported: set[str] = field(default_factory=set)


CASES: list[Case] = [
    CsvCase(
        "csv-01",
        "a NUL byte in a field",
        "that line reported (NUL), the others imported",
        content=HEADER + b"carl@example.com,Ca\x00rl,Cook,Lima\n" + GOOD_ROWS,
        bad_lines={2: "field 'first_name' holds a NUL character"},
        imported=GOOD,
    ),
    CsvCase(
        "csv-02",
        "a 200 KB field",
        "that line reported with the limits, the others imported",
        content=HEADER + b"carl@example.com,Carl,Cook," + b"x" * 200_000 + b"\n" + GOOD_ROWS,
        bad_lines={2: "a field is over 10240 bytes (limits: 10 KB a field, 100 columns)"},
        imported=GOOD,
    ),
    CsvCase(
        "csv-03",
        "a 20 KB field (under the CSV reader's own limit, over ours)",
        "that line reported with the limits, the others imported",
        content=GOOD_ROWS.join([HEADER, b"carl@example.com,Carl,Cook," + b"y" * 20_000 + b"\n"]),
        bad_lines={4: "field 'city' is over 10240 bytes (limits: 10 KB a field, 100 columns)"},
        imported=GOOD,
    ),
    CsvCase(
        "csv-04",
        "the email column twice (the last one would win in silence)",
        "the file refused before anything is written, naming the columns",
        content=b"email,first_name,Email\nann@example.com,Ann,eve@example.com\n",
        exit_code=2,
        refusal="the header names column 'email' more than once (columns 1, 3); name each"
        " column once; nothing was imported",
    ),
    CsvCase(
        "csv-05",
        "no email column",
        "the file refused before anything is written",
        content=b"name,city\nAnn,Oslo\n",
        exit_code=2,
        refusal="the first line must name the columns, one of them 'email'; nothing was imported",
    ),
    CsvCase(
        "csv-06",
        "a file in Latin-1, not UTF-8",
        "the file refused, with the line of the first bad byte",
        content=HEADER + b"ann@example.com,Ann,Archer,Oslo\nzoe@example.com,Zo\xeb,Z,Paris\n",
        exit_code=2,
        refusal="not UTF-8 text (line 3, byte 0xeb at column 19); save the file as CSV in UTF-8",
    ),
    CsvCase(
        "csv-07",
        "a header of 150 columns",
        "the file refused, saying the limit",
        content=b"email," + b",".join(b"c%d" % i for i in range(149)) + b"\n" + GOOD_ROWS,
        exit_code=2,
        refusal="the header names 150 columns; the limit is 100",
    ),
    CsvCase(
        "csv-08",
        "an empty file",
        "the file refused",
        content=b"",
        exit_code=2,
        refusal="the file is empty; nothing was imported",
    ),
    CsvCase(
        "csv-09",
        "a binary file (a PNG named .csv)",
        "the file refused as not UTF-8 text",
        content=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
        exit_code=2,
        refusal="not UTF-8 text (line 1, byte 0x89 at column 1)",
    ),
    CsvCase(
        "csv-10",
        "a 2 MB line without a line break in the middle of the file",
        "that line reported (over the line limit) and not read into memory, the others imported",
        content=HEADER + b"carl@example.com," + b"z," * 1_000_000 + b"\n" + GOOD_ROWS,
        bad_lines={2: "the line is over 1024300 bytes"},
        imported=GOOD,
    ),
    CsvCase(
        "csv-11",
        "more fields than the header, and a NUL in the email itself",
        "both lines reported, the others imported",
        content=HEADER
        + b"carl@example.com,Carl,Cook,Lima,extra\n"
        + b"da\x00n@example.com,Dan,D,Rome\n"
        + GOOD_ROWS,
        bad_lines={2: "more fields than the header names", 3: "field 'email' holds a NUL"},
        imported=GOOD,
    ),
    CsvCase(
        "csv-12",
        "a UTF-8 BOM, CRLF line ends and a blank line (a spreadsheet's export)",
        "imported as a plain file would be",
        content=b"\xef\xbb\xbf" + (HEADER + b"\n" + GOOD_ROWS).replace(b"\n", b"\r\n"),
        imported=GOOD,
    ),
]


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_csv_import(case: Case, installation: Installation, tmp_path: Path) -> None:
    assert isinstance(case, CsvCase)
    pool = installation.pool
    assert pool is not None
    people = tmp_path / "people.csv"
    people.write_bytes(case.content)

    result = await run_mailroom(installation.env, "contacts", "import", people, "--list", "cat")

    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == case.exit_code, result.stderr
    stored = {r["email"] for r in await pool.fetch("SELECT email FROM contacts")}
    assert stored == case.imported
    if case.exit_code != 0:
        assert _one_line(result.stderr).startswith(f"error: {people}: "), result.stderr
        assert case.refusal in _one_line(result.stderr), result.stderr
        assert await pool.fetchval("SELECT count(*) FROM lists") == 0, "nothing written"
        return
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{people}:")]
    assert len(reported) == len(case.bad_lines), result.stderr
    for line, reason in case.bad_lines.items():
        assert any(r.startswith(f"{people}:{line}: {reason}") for r in reported), reported
    members = await pool.fetchval(
        "SELECT count(*) FROM list_memberships m JOIN lists l ON l.id = m.list_id"
        " WHERE l.name = 'cat'"
    )
    assert members == len(case.imported)
