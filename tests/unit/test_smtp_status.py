"""What a permanent SMTP reply at send time is about, and when the circuit breaker trips."""

from __future__ import annotations

import pytest
from mailroom_common.settings import Settings
from mailroom_common.smtp_status import rejection_kind
from mailroom_completion.breaker import Figures, judge


@pytest.mark.parametrize(
    ("code", "reply", "kind"),
    [
        (550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown", "address"),
        (550, "5.1.10 Recipient address has null MX", "address"),
        (550, "5.2.1 The email account that you tried to reach is disabled", "address"),
        (553, "5.1.3 Bad recipient address syntax", "address"),
        (550, "5.7.1 Message rejected as spam", "policy"),
        (550, "5.7.26 Unauthenticated email is not accepted (DMARC)", "policy"),
        (552, "5.2.2 Mailbox full", "other"),
        (550, "5.1.8 Bad sender's system address", "other"),
        (550, "Mailbox unavailable", "other"),  # no enhanced status: too vague to suppress
        (554, "5.0.0 Transaction failed", "other"),
        (550, "4.1.1 odd temporary code in a permanent reply", "other"),
    ],
)
def test_a_permanent_reply_is_judged_by_its_enhanced_status_code(
    code: int, reply: str, kind: str
) -> None:
    assert rejection_kind(code, reply) == kind


def _settings(**changes: object) -> Settings:
    return Settings.model_validate({"environment": "development", **changes})


def test_the_breaker_trips_past_a_rate_only_after_enough_attempts() -> None:
    settings = _settings(breaker_min_attempts=100)
    assert judge(Figures(99, 50, 0), settings) is None
    assert judge(Figures(100, 5, 0), settings) is None  # 5 % is not past 5 %
    trip = judge(Figures(100, 6, 0), settings)
    assert trip is not None and trip.cause == "hard_bounces"
    assert "6.00 %" in trip.reason and "6 of 100 attempts" in trip.reason
    complaint = judge(Figures(1000, 0, 2), settings)
    assert complaint is not None and complaint.cause == "complaints"
    assert judge(Figures(1000, 0, 1), settings) is None


def test_the_breaker_trips_on_an_account_refused_long_enough() -> None:
    settings = _settings(breaker_account_failure_seconds=60)
    assert judge(Figures(0, 0, 0, account_failing_seconds=59), settings) is None
    trip = judge(Figures(0, 0, 0, account_failing_seconds=61), settings)
    assert trip is not None and trip.cause == "account" and "61 s" in trip.reason
