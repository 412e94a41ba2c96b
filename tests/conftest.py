from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.environment import Installation
from tests.support.smtp import SmtpServer


@pytest.fixture
async def installation() -> AsyncIterator[Installation]:
    install = Installation()
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server
