"""The delivery-limit policy at start: one bounded attempt, one warning, retries with back-off
in the background until it is put, a gauge that says where it is, and a stop that ends the
retries at once (issue 12: a management API that is down or slow must not stop a start)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import BrokerPolicyError, apply_delivery_limit
from mailroom_common.delivery_limit_keeper import DeliveryLimitKeeper, back_off, put_before
from mailroom_common.metrics import DELIVERY_LIMIT_POLICY_APPLIED
from mailroom_common.settings import Settings
from prometheus_client import REGISTRY

from tests.support.ports import free_port

UNREACHABLE = BrokerPolicyError(
    "cannot reach RabbitMQ's management API at http://127.0.0.1:1: refused"
    " (MAILROOM_RABBITMQ_MANAGEMENT_URL; the broker needs the rabbitmq_management plugin)"
)
TOPOLOGY = Topology(prefix="p", delivery_limit=5, retry_delays_ms=(1000,))


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("mailroom_delivery_limit_policy_applied")


class FakeApi:
    """Fails `failures` times (or for ever with None), then puts the policy."""

    def __init__(self, failures: int | None, error: BrokerPolicyError = UNREACHABLE) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []  # the time limit of each attempt

    async def put(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.failures is None or len(self.calls) <= self.failures:
            raise self.error


def _quick() -> Iterator[float]:
    return itertools.repeat(0.01)


async def test_a_policy_put_at_once_needs_no_retries() -> None:
    DELIVERY_LIMIT_POLICY_APPLIED.set(0)
    api = FakeApi(failures=0)
    keeper = DeliveryLimitKeeper(api.put, "p.delivery-limit", attempt_seconds=3)
    await keeper.start()
    assert api.calls == [3] and keeper.task is None
    assert _gauge() == 1


async def test_a_failed_first_attempt_warns_once_and_retries_until_put(
    caplog: pytest.LogCaptureFixture,
) -> None:
    DELIVERY_LIMIT_POLICY_APPLIED.set(1)  # as a former start in this interpreter left it
    api = FakeApi(failures=4)
    keeper = DeliveryLimitKeeper(api.put, "p.delivery-limit", attempt_seconds=3, delays=_quick())
    with caplog.at_level(logging.DEBUG, logger="mailroom_common.delivery_limit_keeper"):
        await keeper.start()
        assert keeper.task is not None and not keeper.task.done()
        assert _gauge() == 0
        await asyncio.wait_for(keeper.task, 5)
    assert len(api.calls) == 5 and set(api.calls) == {3}
    assert _gauge() == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "MAILROOM_RABBITMQ_MANAGEMENT_URL" in warnings[0].getMessage()
    assert "p.delivery-limit" in warnings[0].getMessage()
    assert any("attempt 5" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_the_retries_wait_longer_each_time_up_to_a_ceiling() -> None:
    assert list(itertools.islice(back_off(5, 300), 9)) == [5, 10, 20, 40, 80, 160, 300, 300, 300]


async def test_stop_ends_the_retries_even_in_the_middle_of_an_attempt() -> None:
    started = asyncio.Event()

    async def hangs(seconds: float) -> None:
        if started.is_set():
            await asyncio.Event().wait()  # a call that never comes back
        started.set()
        raise UNREACHABLE

    keeper = DeliveryLimitKeeper(hangs, "p.delivery-limit", delays=_quick())
    await keeper.start()
    await asyncio.sleep(0.1)  # the second attempt hangs now
    begun = time.monotonic()
    await keeper.stop()
    assert time.monotonic() - begun < 1
    assert keeper.task is not None and keeper.task.cancelled()
    assert _gauge() == 0
    await keeper.stop()  # twice is harmless


async def test_an_unexpected_error_does_not_stop_the_start_or_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def buggy(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KeyError("a bug")

    keeper = DeliveryLimitKeeper(buggy, "p.delivery-limit", delays=_quick())
    await keeper.start()
    assert keeper.task is not None
    await asyncio.wait_for(keeper.task, 5)
    assert calls == 3 and _gauge() == 1


# --- mailroom migrate: tries for a while, then fails -------------------------------------


async def test_migrate_gives_up_at_once_on_a_lasting_refusal() -> None:
    api = FakeApi(failures=None, error=BrokerPolicyError("answered 401", 401))
    with pytest.raises(BrokerPolicyError, match="401"):
        await put_before(api.put, within=30, first_retry=0.01)
    assert len(api.calls) == 1


async def test_migrate_waits_for_a_management_api_that_comes_back() -> None:
    api = FakeApi(failures=3)
    await put_before(api.put, within=30, first_retry=0.01)
    assert len(api.calls) == 4


async def test_migrate_fails_once_its_time_is_up() -> None:
    api = FakeApi(failures=None, error=BrokerPolicyError("answered 503", 503))
    begun = time.monotonic()
    with pytest.raises(BrokerPolicyError, match="503"):
        await put_before(api.put, within=0.5, first_retry=0.05)
    assert 0.2 < time.monotonic() - begun < 2
    assert len(api.calls) >= 3


# --- the management API's own time limit -------------------------------------------------


def _settings(management_url: str) -> Settings:
    return Settings(
        rabbitmq_url="amqp://guest:guest@127.0.0.1:5672/",
        rabbitmq_management_url=management_url,
    )


async def test_a_server_that_never_answers_is_given_up_in_time() -> None:
    with socket.socket() as silent:  # takes connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        settings = _settings(f"http://guest:n0t-in-logs@127.0.0.1:{port}")
        begun = time.monotonic()
        with pytest.raises(BrokerPolicyError) as error:
            await apply_delivery_limit(settings, TOPOLOGY, within=0.5)
        assert time.monotonic() - begun < 1.5
    message = str(error.value)
    assert "MAILROOM_RABBITMQ_MANAGEMENT_URL" in message and "n0t-in-logs" not in message
    assert f"127.0.0.1:{port}" in message


async def test_a_port_nobody_listens_on_names_the_setting_not_the_password() -> None:
    settings = _settings(f"http://guest:n0t-in-logs@127.0.0.1:{free_port()}")
    with pytest.raises(BrokerPolicyError) as error:
        await apply_delivery_limit(settings, TOPOLOGY, within=2)
    message = str(error.value)
    assert "cannot reach" in message and "MAILROOM_RABBITMQ_MANAGEMENT_URL" in message
    assert "n0t-in-logs" not in message
    assert not error.value.lasting


async def test_a_malformed_url_is_an_error_of_the_setting() -> None:
    settings = _settings("http://guest:n0t-in-logs@127.0.0.1:port")
    with pytest.raises(BrokerPolicyError, match="MAILROOM_RABBITMQ_MANAGEMENT_URL") as error:
        await apply_delivery_limit(settings, TOPOLOGY, within=1)
    assert "n0t-in-logs" not in str(error.value)


def test_an_abandoned_call_does_not_hold_the_loops_close() -> None:
    """A stop cancels an attempt that hangs: asyncio.run ends without waiting for its thread
    (asyncio.to_thread's executor would wait out the whole socket time limit)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = _settings(f"http://127.0.0.1:{silent.getsockname()[1]}")

        async def cancelled_attempt() -> None:
            attempt = asyncio.create_task(apply_delivery_limit(settings, TOPOLOGY, within=30))
            await asyncio.sleep(0.2)
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt

        begun = time.monotonic()
        asyncio.run(cancelled_attempt())
        assert time.monotonic() - begun < 2
