"""Bad-input catalogue: addresses, as they enter through `contacts subscribe` and CSV import.

Both go through one check (mailroom_common.addresses.checked_address). What is stored is an
address the renderer accepts (Mailroom sends without SMTPUTF8); anything else is refused with
a reason and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg
import pytest
from mailroom_common.rendering.headers import valid_address

from mailroom.contacts_import import import_contacts
from mailroom.contacts_subscribe import subscribe_contact
from tests.catalogue.cases import Case, case_ids
from tests.support.environment import Installation

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class AddressCase(Case):
    address: str = ""
    via: Literal["subscribe", "import"] = "subscribe"
    stored: str | None = None  # what is written; None: refused
    reason: str = ""  # part of the refusal's reason


CASES: list[Case] = [
    AddressCase(
        "addresses-01",
        "CR/LF in the address to add a Bcc header (subscribe)",
        "refused: invalid characters; nothing written",
        address="ann@example.com\r\nBcc: victim@example.org",
        reason="invalid characters",
    ),
    AddressCase(
        "addresses-02",
        "CR/LF inside a quoted CSV field holding the address (import)",
        "that line refused: invalid characters; nothing written",
        address="ann@example.com\nBcc: victim@example.org",
        via="import",
        reason="invalid characters",
    ),
    AddressCase(
        "addresses-03",
        "an internationalized domain (IDN), user@bücher.de",
        "stored in its ASCII (IDNA) form, which the renderer sends to",
        address="user@bücher.de",
        via="import",
        stored="user@xn--bcher-kva.de",
    ),
    AddressCase(
        "addresses-04",
        "a non-ASCII local part, jürgen@example.com (needs SMTPUTF8)",
        "refused at import with the reason, not failed at every send",
        address="jürgen@example.com",
        via="import",
        reason="Mailroom sends without SMTPUTF8",
    ),
    AddressCase(
        "addresses-05",
        'a quoted local part, "john doe"@example.com',
        "refused: quoting not allowed",
        address='"john doe"@example.com',
        reason="Quoting the part before the @-sign is not allowed",
    ),
    AddressCase(
        "addresses-06",
        "a trailing dot, ann@example.com.",
        "refused: cannot end with a period",
        address="ann@example.com.",
        reason="cannot end with a period",
    ),
    AddressCase(
        "addresses-07",
        "a local part of 65 characters",
        "refused: the limit is 64",
        address="a" * 65 + "@example.com",
        reason="the limit is 64",
    ),
    AddressCase(
        "addresses-08",
        "a domain of 300 characters",
        "refused: too long",
        address="ann@" + "d" * 60 + "." + ("e" * 60 + ".") * 4 + "com",
        via="import",
        reason="too long",
    ),
    AddressCase(
        "addresses-09",
        "a reserved domain (.test, .invalid, .localhost ...)",
        "refused: special-use name",
        address="ann@mailroom.test",
        reason="special-use or reserved name",
    ),
    AddressCase(
        "addresses-10",
        "a display name around the address, Evil <ceo@example.com>",
        "refused: no display name",
        address="Evil <ceo@example.com>",
        via="import",
        reason="display name",
    ),
    AddressCase(
        "addresses-11",
        "a domain literal, ann@[127.0.0.1]",
        "refused: no bracketed IP address",
        address="ann@[127.0.0.1]",
        reason="bracketed IP address",
    ),
    AddressCase(
        "addresses-12",
        "an upper-case domain, Ann@EXAMPLE.com",
        "stored with the domain in lower case",
        address="Ann@EXAMPLE.com",
        stored="Ann@example.com",
    ),
]


async def _enter(
    case: AddressCase, install: Installation, pool: asyncpg.Pool, tmp_path: Path
) -> str | None:
    """Put the address in the way the case says; the refusal's reason, or None."""
    if case.via == "subscribe":
        try:
            await subscribe_contact(pool, install.settings, case.address, "catalogue")
        except ValueError as error:
            return str(error)
        return None
    people = tmp_path / "people.csv"
    quoted = case.address.replace('"', '""')
    people.write_text(f'email,first_name\n"{quoted}",Someone\n', encoding="utf-8")
    report = await import_contacts(pool, people, "catalogue")
    if report.bad_rows:
        assert [line for line, _ in report.bad_rows] == [2]
        return report.bad_rows[0][1]
    return None


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_address(case: Case, installation: Installation, tmp_path: Path) -> None:
    assert isinstance(case, AddressCase)
    pool = installation.pool
    assert pool is not None
    refusal = await _enter(case, installation, pool, tmp_path)
    stored = [r["email"] for r in await pool.fetch("SELECT email FROM contacts")]
    if case.stored is None:
        assert refusal is not None, "the address must be refused"
        assert case.reason in refusal, refusal
        assert stored == [], "nothing written"
    else:
        assert refusal is None, refusal
        assert stored == [case.stored]
        assert valid_address(stored[0]), "what is stored can be sent to"
