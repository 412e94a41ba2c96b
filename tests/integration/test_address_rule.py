"""The database's one address check, `mailroom_address_ok` (migration 0008), which the item
generator's snapshot and the autoresponder scheduler call: it accepts every address that
`checked_address` stores, refuses what has not the shape of an address, and is inlined into
the statements that call it (the snapshot of a million contacts must not call a function a
million times)."""

from __future__ import annotations

import contextlib

import pytest
from mailroom_common.addresses import AddressProblem, checked_address

from tests.support.environment import Installation
from tests.support.scenario import pool_of
from tests.unit.test_address_fast_path import DOMAINS, LOCALS, WHOLE

pytestmark = pytest.mark.integration

NOT_ADDRESSES = [
    "", "not-an-address", "two@@example.test", "ann@", "@example.com", "ann@example",
    "ann@example.com ", "ann @example.com", "ann@exa mple.com", "ann@example.com\r\n",
    "ann@example.com@example.com", "Name <ann>",
]  # fmt: skip


def _stored_addresses() -> set[str]:
    stored = set()
    for value in [f"{local}@{domain}" for local in LOCALS for domain in DOMAINS] + WHOLE:
        with contextlib.suppress(AddressProblem):
            stored.add(checked_address(value))
    return stored


async def test_every_address_the_importer_stores_passes(installation: Installation) -> None:
    stored = sorted(_stored_addresses())
    assert len(stored) > 100
    refused = await pool_of(installation).fetch(
        "SELECT a FROM unnest($1::text[]) a WHERE NOT mailroom_address_ok(a)", stored
    )
    assert refused == []


async def test_what_is_not_an_address_is_refused(installation: Installation) -> None:
    passed = await pool_of(installation).fetch(
        "SELECT a FROM unnest($1::text[]) a WHERE mailroom_address_ok(a)", NOT_ADDRESSES
    )
    assert passed == []


async def test_the_check_is_inlined_into_the_statement(installation: Installation) -> None:
    plan = "\n".join(
        row[0]
        for row in await pool_of(installation).fetch(
            "EXPLAIN (VERBOSE) SELECT id FROM contacts c WHERE mailroom_address_ok(c.email)"
        )
    )
    assert "mailroom_address_ok" not in plan
    assert "c.email ~ " in plan
