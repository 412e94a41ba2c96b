"""The settings groups as the admin API shows and changes them (pure logic, no I/O).

- A group's public view: its fields, passwords masked (write-only), plus read-only entries.
- A change: a partial body merged into the current value and validated as a whole with the
  group's model; read-only entries refused (409); footers checked (they compile, and they
  carry the unsubscribe link).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailroom_common.dkim_signing import KeyProblem, algorithm_of, load_private_key
from mailroom_common.rendering import MessageContent, TemplateProblem, compile_message
from mailroom_common.runtime_settings import (
    DEFAULT_HTML_FOOTER,
    DEFAULT_TEXT_FOOTER,
    GROUPS,
    MarketingSettings,
    SmtpAccount,
)
from mailroom_common.settings import Settings
from pydantic import BaseModel, SecretStr, ValidationError

MASK = "********"
GROUP_NAMES = tuple(GROUPS)
BOUNCE_DELETION = (
    "Every message in this mailbox is deleted after it is processed, so it must be a"
    " dedicated bounce mailbox, never a personal one."
)
# read-only entries of a group: name -> (the deployment setting it comes from, or None)
DEPLOYMENT_SETTINGS: dict[str, dict[str, str]] = {
    "marketing": {
        "batch_size": "MAILROOM_BATCH_SIZE",
        "items_page_size": "MAILROOM_ITEMS_PAGE_SIZE",
    },
}
STATEMENTS: dict[str, dict[str, str]] = {"bounce": {"after_processing": BOUNCE_DELETION}}
FOOTERS = {"text footer": "text_footer", "html footer": "html_footer"}


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


class Invalid(Exception):
    """422: the changed group is not valid; each problem names its field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.problem}" for p in problems))


class ReadOnly(Exception):
    """409: the body tries to change an entry the admin API does not own."""


def secret_fields(group: str) -> list[str]:
    model = GROUPS[group]
    return [name for name, field in model.model_fields.items() if field.annotation is SecretStr]


def editable_fields(group: str) -> list[str]:
    return [name for name in GROUPS[group].model_fields if name != "group"]


def plain(value: BaseModel) -> dict[str, Any]:
    """Every field as JSON values, passwords in clear (only ever in memory)."""
    data = value.model_dump(mode="json")
    for name, field in type(value).model_fields.items():
        if field.annotation is SecretStr:
            data[name] = getattr(value, name).get_secret_value()
    data.pop("group", None)
    return data


def public(value: BaseModel) -> dict[str, Any]:
    """Every field as the API shows it: a password is MASK when set, "" when not."""
    data = value.model_dump(mode="json")
    data.pop("group", None)
    for name, field in type(value).model_fields.items():
        if field.annotation is SecretStr:
            data[name] = MASK if getattr(value, name).get_secret_value() else ""
    return data


def read_only(group: str, settings: Settings) -> dict[str, Any]:
    entries: dict[str, Any] = {
        name: getattr(settings, name) for name in DEPLOYMENT_SETTINGS.get(group, {})
    }
    entries.update(STATEMENTS.get(group, {}))
    return entries


def _problem_text(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown setting"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def problems_of(error: ValidationError) -> list[FieldProblem]:
    """The problems of a validation error, without the values (a value may be a password)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(body)"
        if len(field) > 100 or not field.isprintable():  # an unknown key is the sender's text
            field = repr(field[:100])
        problems.append(FieldProblem(field, _problem_text(dict(item))))
    return problems


def merge(group: str, current: BaseModel, changes: dict[str, Any], settings: Settings) -> BaseModel:
    """The group's new value: `changes` over `current`, validated as a whole.

    Raises ReadOnly (409) for a changed read-only entry, Invalid (422) for anything invalid.
    An unchanged read-only entry (a GET sent back) is ignored; so is a masked password.
    """
    fixed = read_only(group, settings)
    updates = dict(changes)
    for name, value in changes.items():
        if name in fixed:
            if value != fixed[name]:
                source = DEPLOYMENT_SETTINGS.get(group, {}).get(name)
                raise ReadOnly(
                    f"read-only: set by the deployment ({source})"
                    if source
                    else f"read-only: {fixed[name]}"
                )
            del updates[name]
    secrets = secret_fields(group)
    for name in secrets:
        if updates.get(name) == MASK:
            del updates[name]  # the mask sent back: keep the stored password
    merged = {**plain(current), **updates, "group": group}
    if group == "smtp":
        _promote_next_dkim_key(merged, updates, getattr(current, "dkim_selector", ""))
    try:
        value = GROUPS[group].model_validate(merged)
    except ValidationError as error:
        raise Invalid(problems_of(error)) from None
    if isinstance(value, MarketingSettings):
        footer_problems = check_footers(value)
        if footer_problems:
            raise Invalid(footer_problems)
    if isinstance(value, SmtpAccount):
        dkim_problems = check_dkim(value)
        if dkim_problems:
            raise Invalid(dkim_problems)
    return value


def _promote_next_dkim_key(merged: dict[str, Any], updates: dict[str, Any], active: str) -> None:
    """dkim_selector set to the next selector (and no key sent with it): the next key
    becomes the active one and the active selector the previous one (key rotation)."""
    selector = updates.get("dkim_selector")
    if (
        selector
        and selector == merged.get("dkim_next_selector")
        and "dkim_private_key" not in updates
    ):
        merged["dkim_previous_selector"] = active
        merged["dkim_private_key"] = merged["dkim_next_private_key"]
        merged["dkim_next_selector"] = ""
        merged["dkim_next_private_key"] = ""


DKIM_KEYS = {
    "dkim_private_key": "rsa-sha256",
    "dkim_next_private_key": "rsa-sha256",
    "dkim_ed25519_private_key": "ed25519-sha256",
}


def check_dkim(value: SmtpAccount) -> list[FieldProblem]:
    """Each DKIM key loads and is of its kind (RSA of 2048 bits or more, Ed25519); a domain
    with a key and a selector, or none. The problems never show a key."""
    problems = []
    for field, algorithm in DKIM_KEYS.items():
        pem = getattr(value, field).get_secret_value()
        if not pem:
            continue
        try:
            key = load_private_key(pem)
        except KeyProblem as problem:
            problems.append(FieldProblem(field, str(problem)))
            continue
        if algorithm_of(key) != algorithm:
            problems.append(FieldProblem(field, f"not a key for {algorithm}"))
    pairs = (
        ("dkim_selector", "dkim_private_key"),
        ("dkim_next_selector", "dkim_next_private_key"),
        ("dkim_ed25519_selector", "dkim_ed25519_private_key"),
    )
    for selector, key_field in pairs:
        if bool(getattr(value, selector)) != bool(getattr(value, key_field).get_secret_value()):
            problems.append(FieldProblem(selector, f"{selector} and {key_field} go together"))
    if value.dkim_domain and not value.dkim_private_key.get_secret_value():
        problems.append(FieldProblem("dkim_domain", "signing needs dkim_selector and its key"))
    return problems


def check_footers(value: MarketingSettings) -> list[FieldProblem]:
    """Each footer compiles as the message processor compiles it, passes the trial render and
    outputs the unsubscribe link for every recipient (checked on its structure: a link inside
    a condition, a loop, a block or a comment does not count). Each footer is checked beside
    the default of the other, so that both are reported. Runs for up to the compile budget:
    call it off the event loop."""
    problems = []
    for field, text_footer, html_footer in (
        ("text_footer", value.text_footer, DEFAULT_HTML_FOOTER),
        ("html_footer", DEFAULT_TEXT_FOOTER, value.html_footer),
    ):
        content = MessageContent(
            subject="Footer check",
            html="<html><body><p>Footer check.</p></body></html>",
            text="Footer check.",
            from_name="Mailroom",
            from_email="footer-check@example.com",
            text_footer=text_footer,
            html_footer=html_footer,
        )
        try:
            compile_message(content)
        except TemplateProblem as problem:
            where = f"line {problem.line}: " if problem.line is not None else ""
            problems.append(FieldProblem(field, f"{where}{problem.problem}"))
    return problems
