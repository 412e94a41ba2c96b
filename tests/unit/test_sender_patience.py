"""Which database errors the sender waits out, and which it lets fail."""

from __future__ import annotations

import asyncpg
from mailroom_outbound_sender.patience import database_unavailable


def test_connection_trouble_is_waited_out() -> None:
    assert database_unavailable(ConnectionResetError())
    assert database_unavailable(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert database_unavailable(
        asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress")
    )


def test_a_refused_statement_is_not() -> None:
    assert not database_unavailable(asyncpg.CheckViolationError("status a -> b is not allowed"))
    assert not database_unavailable(ValueError("a bug"))
