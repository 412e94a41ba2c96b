"""Naming the server a command could not reach: one line naming its setting, not a traceback."""

from __future__ import annotations

import traceback
from urllib.parse import urlsplit, urlunsplit

import aiormq
import asyncpg

DATABASE = "MAILROOM_DATABASE_URL"
RABBITMQ = "MAILROOM_RABBITMQ_URL"
# what PostgreSQL answers when it will not let us in (not a failing query)
DATABASE_REFUSALS: tuple[type[Exception], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # a wrong user or password
    asyncpg.InvalidCatalogNameError,  # the database does not exist
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,  # the connection was lost
)


class BrokerSilent(TimeoutError):
    """The broker took the connection but did not answer, or did not confirm a publish, in
    time (an alarm blocking publishers, an overloaded node, another server on the port)."""


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _raised_in(error: BaseException) -> set[str]:
    """The top-level packages whose code the error went through."""
    return {
        str(frame.f_globals.get("__name__", "")).split(".")[0]
        for frame, _ in traceback.walk_tb(error.__traceback__)
    }


def unreachable_setting(error: BaseException) -> str | None:
    """The setting of the server `error` says could not be reached (or refused us), if any."""
    for cause in _chain(error):
        if isinstance(cause, aiormq.exceptions.AMQPConnectionError | BrokerSilent):
            return RABBITMQ
        if isinstance(cause, DATABASE_REFUSALS):
            return DATABASE
        if isinstance(cause, OSError | TimeoutError):
            packages = _raised_in(cause)
            if "asyncpg" in packages:
                return DATABASE
            if packages & {"aiormq", "aio_pika", "faststream"}:
                return RABBITMQ
    return None


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def describe(error: BaseException, setting: str, url: str) -> str:
    server = "the database" if setting == DATABASE else "the broker"
    detail = str(error).strip() or type(error).__name__
    return f"cannot reach {server} at {without_password(url)} ({setting}): {detail}"
