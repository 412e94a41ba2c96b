"""An autoresponder's compiled message: the same rendering code as campaigns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailroom_common.rendering import CompiledMessage, MessageContent, compile_message
from mailroom_common.runtime_settings import MarketingSettings, SmtpAccount


def compile_autoresponder(
    autoresponder: Mapping[str, Any], marketing: MarketingSettings, account: SmtpAccount
) -> CompiledMessage:
    """Raises TemplateProblem with a message for the marketer. The From defaults to the
    global SMTP account's."""
    content = MessageContent(
        subject=autoresponder["subject"],
        html=autoresponder["html_template"],
        text=autoresponder["text_template"],
        from_name=autoresponder["from_name"] or account.from_name,
        from_email=autoresponder["from_email"] or account.from_email,
        reply_to=autoresponder["reply_to"],
        text_footer=marketing.text_footer,
        html_footer=marketing.html_footer,
        extra_headers=(
            ("Auto-Submitted", "auto-generated"),
            ("X-Mailroom-Autoresponder", str(autoresponder["id"])),
        ),
    )
    return compile_message(
        content,
        context={"autoresponder": {"id": autoresponder["id"], "name": autoresponder["name"]}},
    )
