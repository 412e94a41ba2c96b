"""Pure parts of the console: where sign-in may lead, the settings forms as API changes, the
cache of ended campaigns' counts, the CSRF and session tokens."""

from __future__ import annotations

from mailroom_common.campaign_counts import KeptCounts
from mailroom_config.console.app import _safe_next
from mailroom_config.console.forms import changes_from, shown_values
from mailroom_config.console.sessions import Sessions, same_token


def test_sign_in_leads_only_to_a_console_page() -> None:
    assert _safe_next("/console/campaigns") == "/console/campaigns"
    for target in (
        None,
        "",
        "https://evil.example/console/x",
        "//evil.example",
        "/console//evil.example",
        "/console/../admin",
        "/console/%2e%2e/%2E%2e/settings",  # a browser resolves these dots too
        "/console/%2F%2Fevil.example",
        "/console\\\\evil",
        "/console/sign-out",
        "/console/x\nSet-Cookie: a=b",
        "/console/" + "a" * 300,
    ):
        assert _safe_next(target) == "/console/jobs", target


def test_a_form_is_the_change_the_api_takes() -> None:
    form = {"host": "smtp.example.com", "port": "587", "password": "", "security": "starttls"}
    changes = changes_from("smtp", form)
    # an empty password keeps the stored one; an unticked box is False
    assert changes == {
        "host": "smtp.example.com",
        "port": "587",
        "security": "starttls",
        "verify_certificates": False,
    }
    assert changes_from("smtp", {"password": "new", "verify_certificates": "on"})["password"] == (
        "new"
    )
    assert changes_from("smtp", {"password": "typed", "password__clear": "on"})["password"] == ""
    footers = changes_from("marketing", {"text_footer": "a\r\nb {{ unsubscribe_url }}"})
    assert footers == {"text_footer": "a\nb {{ unsubscribe_url }}"}
    shown = shown_values(
        "smtp", {"host": "old", "password": "********"}, {"host": "x", "password": "p"}
    )
    assert shown["host"] == "x" and shown["password"] == "********"


def test_ended_counts_are_kept_for_their_period() -> None:
    kept = KeptCounts(seconds=60)
    assert kept.get(1) is None
    kept.put(1, {"sent": 3})
    assert kept.get(1) == {"sent": 3}
    assert KeptCounts(seconds=0).get(1) is None
    tiny = KeptCounts(size=2)
    for i in range(3):
        tiny.put(i, {})
    assert len(tiny.kept) <= 2


def test_csrf_tokens_are_bound_to_their_session() -> None:
    sessions = Sessions(pool=None, signing_key="k" * 40, idle_minutes=30)  # type: ignore[arg-type]
    other = Sessions(pool=None, signing_key="j" * 40, idle_minutes=30)  # type: ignore[arg-type]
    assert sessions.csrf_for("a") != sessions.csrf_for("b")
    assert sessions.csrf_for("a") != other.csrf_for("a")
    assert same_token(sessions.csrf_for("a"), sessions.csrf_for("a"))
    assert not same_token(None, sessions.csrf_for("a"))
    # a cookie must carry our signature of its secret
    secret = "s3cret"
    good = f"{secret}.{sessions._mac(secret)}"
    assert sessions._secret_of(good) == secret
    assert sessions._secret_of(f"{secret}.{other._mac(secret)}") is None
    assert sessions._secret_of(f"{secret}x.{sessions._mac(secret)}") is None
    assert sessions._secret_of("x" * 500) is None


def test_kept_counts_say_when_they_were_counted() -> None:
    kept = KeptCounts(seconds=60)
    kept.put(1, {"sent": 3}, counted_at_ms=1234)
    assert kept.found(1) == (1234, {"sent": 3})
    assert kept.found(2) is None
