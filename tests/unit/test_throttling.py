"""Which SMTP replies are throttling (the relay asks the account to slow down)."""

from __future__ import annotations

import time

import pytest
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_outbound_sender.send_rate import policy_of
from mailroom_outbound_sender.throttling import is_throttling

from mailroom import smtp_sink


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (421, "4.7.0 Try again later"),
        (421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred"),
        (421, "Service not available, closing transmission channel"),
        (451, "4.7.500 Server busy. Please try again later"),
        (450, "4.7.28 Our system has detected an unusual rate of unsolicited mail"),
        (452, "4.5.3 Too many recipients"),
        (454, "Throttling failure: Maximum sending rate exceeded."),
        (451, "Rate limit exceeded, slow down"),
        (450, "Too many messages from your account this hour"),
    ],
)
def test_throttling_replies(code: int, message: str) -> None:
    assert is_throttling(code, message)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (451, "4.3.0 Try again later"),  # a temporary failure of this transaction
        (452, "4.2.2 Mailbox full"),
        (450, "4.2.1 Mailbox busy"),
        (451, "4.7.1 Greylisting in action, please come back later"),
        (450, "4.7.1 Greylisted, see https://example.org/greylisting"),
        (550, "5.7.1 Rate limit exceeded"),  # permanent: never a throttle
        (250, "2.0.0 OK"),
        (None, "connection lost"),
    ],
)
def test_other_replies(code: int | None, message: str) -> None:
    assert not is_throttling(code, message)


def test_the_account_caps_make_the_policy() -> None:
    account = SmtpAccount(
        messages_per_second=200,
        rate_floor_per_second=2,
        rate_increase_step_percent=5,
        rate_decrease_factor=0.7,
        rate_interval_seconds=3,
    )
    policy = policy_of(account)
    assert (policy.ceiling, policy.floor, policy.step) == (200, 2, 10)
    assert (policy.factor, policy.interval_seconds) == (0.7, 3)


def test_without_adaptation_the_rate_is_the_accounts() -> None:
    policy = policy_of(SmtpAccount(messages_per_second=50, adaptive_rate=False))
    assert policy.floor == policy.ceiling == 50


def test_the_benchmark_relay_admits_a_rate_over_a_sliding_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    window = smtp_sink.RateWindow(3)
    assert [window.admit() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert not window.admit()
    now[0] += 0.6  # the first three are more than a second old
    assert [window.admit() for _ in range(4)] == [True, True, True, False]
    assert window.refused == 3
