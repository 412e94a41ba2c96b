"""Waiting out a database or broker restart instead of throwing known results away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

log = logging.getLogger(__name__)

T = TypeVar("T")

# a restart takes seconds; past this the outage is somebody's to fix and the message goes
# back to its queue
PATIENCE_SECONDS = 120.0
FIRST_PAUSE_SECONDS = 0.1
LONGEST_PAUSE_SECONDS = 1.0  # recovery within a second of the server being back


def database_unavailable(error: BaseException) -> bool:
    """Connection trouble (refused, lost, server shutting down or starting): worth another
    try. A statement PostgreSQL refused is not. asyncpg's InternalClientError ("cannot switch
    to state …; another operation is in progress") comes from a connection the server cut
    mid-statement, seen during a PostgreSQL restart: the next try takes another connection."""
    return isinstance(
        error,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.OperatorInterventionError,
    )


def broker_unavailable(error: BaseException) -> bool:
    return isinstance(error, Exception)


async def patiently(
    what: str,
    call: Callable[[], Awaitable[T]],
    retryable: Callable[[BaseException], bool],
    patience: float = PATIENCE_SECONDS,
) -> T:
    """`call()`, tried again on `retryable` errors for up to `patience` seconds."""
    started = time.monotonic()
    pause = FIRST_PAUSE_SECONDS
    tries = 0
    while True:
        try:
            result = await call()
        except Exception as error:
            waited = time.monotonic() - started
            if not retryable(error) or waited + pause > patience:
                raise
            # one line per outage, not per try
            (log.warning if tries == 0 else log.debug)(
                "%s failed, trying again until it works (%.0f s at most): %r",
                what,
                patience,
                error,
            )
        else:
            if tries:
                log.info("%s worked after %.1f s", what, time.monotonic() - started)
            return result
        tries += 1
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
