from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.environment import RUN_KEYS, Installation
from tests.support.smtp import SmtpServer

os.environ.update(RUN_KEYS)  # production mode, with keys of this run (see RUN_KEYS)
os.environ.pop("MAILROOM_ENVIRONMENT", None)


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
