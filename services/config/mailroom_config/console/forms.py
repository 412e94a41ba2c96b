"""The settings forms of the console: which fields each page shows, and a posted form as the
partial change the admin API takes (so both go through settings_ops.change_group)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECURITY_OPTIONS = (
    ("none", "None (plain SMTP)"),
    ("starttls", "STARTTLS"),
    ("tls", "TLS from the start (SMTPS/IMAPS)"),
)


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str = "text"  # text, number, email, url, password, checkbox, select, textarea
    hint: str = ""
    options: tuple[tuple[str, str], ...] = ()
    step: str = "1"
    autocomplete: str = "off"


SMTP_FIELDS = (
    FormField("host", "Host", hint="The SMTP server's name or address."),
    FormField("port", "Port", "number", hint="25, 587 (STARTTLS) or 465 (TLS)."),
    FormField("security", "Security", "select", options=SECURITY_OPTIONS),
    FormField("username", "Username", hint="Empty: no authentication."),
    FormField("password", "Password", "password", autocomplete="new-password"),
    FormField("verify_certificates", "Verify the server's certificate", "checkbox"),
    FormField("from_name", "Sender name"),
    FormField("from_email", "Sender address", "email"),
    FormField("pool_size", "Connections (pool size)", "number"),
    FormField(
        "messages_per_second",
        "Messages per second",
        "number",
        step="any",
        hint="The account's limit, shared by every sender replica.",
    ),
    FormField("timeout_seconds", "Timeout (seconds)", "number", step="any"),
)

MARKETING_FIELDS = (
    FormField(
        "text_footer",
        "Plain-text footer",
        "textarea",
        hint="Appended to the text part of every campaign and autoresponder email. It must"
        " contain {{ unsubscribe_url }}.",
    ),
    FormField(
        "html_footer",
        "Rich-text (HTML) footer",
        "textarea",
        hint="Appended to the HTML part. It must contain {{ unsubscribe_url }}.",
    ),
    FormField(
        "public_base_url",
        "Public address of the links",
        "url",
        hint="Where the unsubscribe and manage-subscriptions links point (https://).",
    ),
)

BOUNCE_FIELDS = (
    FormField("host", "Host", hint="The IMAP server of the bounce mailbox."),
    FormField("port", "Port", "number", hint="143 (STARTTLS or none) or 993 (TLS)."),
    FormField("security", "Security", "select", options=SECURITY_OPTIONS),
    FormField("username", "Username"),
    FormField("password", "Password", "password", autocomplete="new-password"),
    FormField("verify_certificates", "Verify the server's certificate", "checkbox"),
    FormField("folder", "Folder"),
    FormField("poll_interval_seconds", "Check every (seconds)", "number", step="any"),
    FormField(
        "soft_bounce_threshold",
        "Soft bounces before an address is suppressed",
        "number",
    ),
    FormField("soft_bounce_window_days", "... within (days)", "number"),
)

FIELDS = {"smtp": SMTP_FIELDS, "marketing": MARKETING_FIELDS, "bounce": BOUNCE_FIELDS}


def clear_name(field: FormField) -> str:
    return f"{field.name}__clear"


def changes_from(group: str, form: dict[str, str]) -> dict[str, Any]:
    """The change a posted settings form asks for. A password left empty keeps the stored
    one (write-only: the page never has it); its "remove" box removes it. A field the form
    does not carry is left alone, except a checkbox, which a browser omits when unticked."""
    changes: dict[str, Any] = {}
    for field in FIELDS[group]:
        if field.kind == "checkbox":
            changes[field.name] = field.name in form
        elif field.kind == "password":
            if clear_name(field) in form:
                changes[field.name] = ""
            elif form.get(field.name):
                changes[field.name] = form[field.name]
        elif field.name in form:
            value = form[field.name]
            # a browser sends a textarea's lines with CRLF; the footers are kept with LF
            changes[field.name] = value.replace("\r\n", "\n") if field.kind == "textarea" else value
    return changes


def shown_values(group: str, stored: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """What a form shows again after a refusal: what was posted (never a password)."""
    values = dict(stored)
    for field in FIELDS[group]:
        if field.kind == "checkbox":
            values[field.name] = field.name in form
        elif field.kind != "password" and field.name in form:
            values[field.name] = form[field.name]
    return values
