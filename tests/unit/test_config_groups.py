"""The config service's pure logic: masking, merging, read-only entries, footer checks,
the token check and the CLI's KEY=VALUE parsing."""

from __future__ import annotations

from typing import Any

import pytest
from mailroom_common.runtime_settings import (
    DEFAULT_HTML_FOOTER,
    DEFAULT_TEXT_FOOTER,
    BounceMailbox,
    MarketingSettings,
    SmtpAccount,
)
from mailroom_common.settings import Settings
from mailroom_config.api import AdminAuth
from mailroom_config.groups import (
    MASK,
    Invalid,
    ReadOnly,
    check_footers,
    merge,
    public,
    read_only,
)
from pydantic import SecretStr

from mailroom.cli import parse_assignments

SETTINGS = Settings(batch_size=25, items_page_size=300)


def _fields(error: pytest.ExceptionInfo[Invalid]) -> list[str]:
    return [p.field for p in error.value.problems]


def test_a_password_is_shown_masked_only_when_set() -> None:
    assert public(SmtpAccount())["password"] == ""
    shown = public(SmtpAccount(password=SecretStr("s3cret")))
    assert shown["password"] == MASK and "group" not in shown
    assert "s3cret" not in repr(shown)


def test_merge_keeps_the_rest_and_the_password_behind_the_mask() -> None:
    current = SmtpAccount(host="mx.example.com", password=SecretStr("s3cret"))
    merged = merge("smtp", current, {"port": 587, "password": MASK}, SETTINGS)
    assert isinstance(merged, SmtpAccount)
    assert merged.port == 587 and merged.host == "mx.example.com"
    assert merged.password.get_secret_value() == "s3cret"
    cleared = merge("smtp", current, {"password": ""}, SETTINGS)
    assert isinstance(cleared, SmtpAccount) and cleared.password.get_secret_value() == ""


def test_merge_refuses_invalid_values_by_field_without_echoing_them() -> None:
    with pytest.raises(Invalid) as error:
        merge("smtp", SmtpAccount(), {"port": 0, "security": "ssl", "colour": "red"}, SETTINGS)
    assert sorted(_fields(error)) == ["colour", "port", "security"]
    assert {p.field: p.problem for p in error.value.problems}["colour"] == "unknown setting"
    with pytest.raises(Invalid) as error:
        merge("bounce", BounceMailbox(), {"password": {"nested": "hunter2"}}, SETTINGS)
    assert _fields(error) == ["password"] and "hunter2" not in str(error.value)
    with pytest.raises(Invalid) as error:
        merge("marketing", MarketingSettings(), {"public_base_url": "http://x.test"}, SETTINGS)
    assert error.value.problems[0].problem.startswith("must be an https:// URL")


def test_read_only_entries() -> None:
    assert read_only("marketing", SETTINGS) == {"batch_size": 25, "items_page_size": 300}
    assert "deleted" in read_only("bounce", SETTINGS)["after_processing"]
    assert read_only("smtp", SETTINGS) == {}
    with pytest.raises(
        ReadOnly, match=r"^read-only: set by the deployment \(MAILROOM_BATCH_SIZE\)$"
    ):
        merge("marketing", MarketingSettings(), {"batch_size": 26}, SETTINGS)
    with pytest.raises(ReadOnly, match=r"\(MAILROOM_ITEMS_PAGE_SIZE\)$"):
        merge("marketing", MarketingSettings(), {"items_page_size": "300"}, SETTINGS)
    # the same value (a GET sent back) is no attempt to change it
    same = merge("marketing", MarketingSettings(), {"batch_size": 25}, SETTINGS)
    assert same == MarketingSettings()


@pytest.mark.parametrize(
    ("text_footer", "html_footer", "fields"),
    [
        (DEFAULT_TEXT_FOOTER, DEFAULT_HTML_FOOTER, []),
        ("Stop: {{unsubscribe_url}}", '<a href="{{unsubscribe_url}}">Stop</a>', []),
        ("Manage: {{ manage_url }}", DEFAULT_HTML_FOOTER, ["text_footer"]),
        (DEFAULT_TEXT_FOOTER, "<p>Thanks</p>", ["html_footer"]),
        ("", "", ["text_footer", "html_footer"]),
        ("{% if false %}{{ unsubscribe_url }}{% endif %}", DEFAULT_HTML_FOOTER, ["text_footer"]),
        ("{# {{ unsubscribe_url }} #}", DEFAULT_HTML_FOOTER, ["text_footer"]),
        ("{{ unsubscribe_url }", DEFAULT_HTML_FOOTER, ["text_footer"]),
        (DEFAULT_TEXT_FOOTER, "{{ unsubscribe_url }}{% for %}", ["html_footer"]),
        ("{{ unsubscribe_url }} {{ ''.__class__.__mro__ }}", DEFAULT_HTML_FOOTER, ["text_footer"]),
    ],
)
def test_footers_compile_and_carry_the_unsubscribe_link(
    text_footer: str, html_footer: str, fields: list[str]
) -> None:
    value = MarketingSettings(text_footer=text_footer, html_footer=html_footer)
    assert [p.field for p in check_footers(value)] == fields


def test_a_broken_footer_names_its_line() -> None:
    value = MarketingSettings(text_footer="Hello\n{{ unsubscribe_url }\n")
    (problem,) = check_footers(value)
    assert problem.field == "text_footer" and problem.problem.startswith("line 2: ")


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer right-token", True),
        ("bearer right-token", True),
        ("Bearer  right-token ", True),
        ("Bearer wrong-token", False),
        ("Bearer right-token2", False),
        ("Bearer right-toke", False),
        ("Basic right-token", False),
        ("right-token", False),
        ("Bearer", False),
        ("", False),
    ],
)
def test_the_token_check(header: str, allowed: bool) -> None:
    async def app(*_: Any) -> None:
        return None

    assert AdminAuth(app, SecretStr("right-token")).allowed(header) is allowed
    assert AdminAuth(app, None).allowed(header) is False
    assert AdminAuth(app, SecretStr("")).allowed(header) is False


def test_cli_values_are_json_unless_the_setting_holds_text() -> None:
    current = {"host": "127.0.0.1", "port": 25, "password": "", "verify_certificates": True}
    changes = parse_assignments(
        [
            "port=2525",
            "verify_certificates=false",
            "password=123456",
            "host=10.0.0.1",
            "timeout_seconds=2.5",
            "from_name=Mailroom News",
            "text_footer=a=b {{ unsubscribe_url }}",
        ],
        current,
    )
    assert changes == {
        "port": 2525,
        "verify_certificates": False,
        "password": "123456",
        "host": "10.0.0.1",
        "timeout_seconds": 2.5,
        "from_name": "Mailroom News",
        "text_footer": "a=b {{ unsubscribe_url }}",
    }
