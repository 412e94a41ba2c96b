from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.support.environment import Installation
from tests.support.fault_campaign import fault_installation
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.server_restarts import ensure_servers_up, restart_lock


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(autouse=True)
async def servers_steady() -> AsyncIterator[None]:
    """No one else restarts RabbitMQ or PostgreSQL while a case runs (it holds the restart
    lock); a case that failed half-way may have left one down: start it."""
    with restart_lock():
        await ensure_servers_up()
        yield


@pytest.fixture
async def installations() -> AsyncIterator[Callable[..., Awaitable[Installation]]]:
    """Installations with the fault matrix's settings (plus overrides), each torn down with
    its processes, database and queues at the end of the case."""
    made: list[Installation] = []

    async def make(**overrides: Any) -> Installation:
        install = fault_installation(**overrides)
        made.append(install)
        await install.setup()
        return install

    yield make
    for install in made:
        await ensure_servers_up()
        await install.teardown()


@pytest.fixture
async def install(installations: Callable[..., Awaitable[Installation]]) -> Installation:
    return await installations()


@pytest.fixture
def smtp() -> Iterator[FaultySmtpServer]:
    with FaultySmtpServer() as server:
        yield server
