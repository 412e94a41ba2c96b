"""/readyz of a process: database and broker fail it; a service's own check (the bounce
mailbox) fails only that service, and the process only when it runs nothing else."""

from __future__ import annotations

from mailroom_common.http import Readiness

FINE = {"process": None, "database": None, "broker": None}
MAILBOX_DOWN = {"bounce_processor:bounce_mailbox": "bounce mailbox: connection refused"}


def test_a_bounce_mailbox_down_leaves_the_other_services_of_run_all_ready() -> None:
    answer = Readiness.of(FINE, {"subscriptions": {}, "bounce_processor": MAILBOX_DOWN})
    assert answer.ready
    assert answer.services["subscriptions"] == {"ready": True, "problems": {}}
    assert answer.services["bounce_processor"] == {"ready": False, "problems": MAILBOX_DOWN}
    assert answer.problems == MAILBOX_DOWN  # reported, not failing


def test_the_bounce_processor_alone_is_not_ready_without_its_mailbox() -> None:
    answer = Readiness.of(FINE, {"bounce_processor": MAILBOX_DOWN})
    assert not answer.ready


def test_the_database_fails_every_service() -> None:
    answer = Readiness.of({**FINE, "database": "unreachable"}, {"subscriptions": {}})
    assert not answer.ready
    assert answer.services["subscriptions"]["ready"] is False
    assert answer.as_json()["problems"] == {"database": "unreachable"}


def test_not_ready_until_started() -> None:
    assert not Readiness.of({**FINE, "process": "starting"}, {"completion": {}}).ready
