"""The footer preview: a real message (a short sample body and the footers being edited),
compiled and rendered for a sample contact by the code the message processor runs, and read
back into its plain-text and HTML parts. Footers that would be refused on save are refused
here too, with the same words."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

from mailroom_common.rendering import MessageContent, TemplateProblem, compile_message
from mailroom_common.rendering.message import SAMPLE_RECIPIENT
from mailroom_common.runtime_settings import MarketingSettings
from pydantic import ValidationError

from mailroom_config.groups import FieldProblem, check_footers, problems_of

SAMPLE_HTML = (
    '<html><body><h1 style="font-family:sans-serif">Hello {{ contact.first_name }},</h1>'
    '<p style="font-family:sans-serif">This is how your footers look under a campaign\'s'
    " message.</p></body></html>"
)
SAMPLE_TEXT = (
    "Hello {{ contact.first_name }},\n\nThis is how your footers look under a campaign's message.\n"
)


@dataclass
class Preview:
    text: str = ""
    html: str = ""
    problems: list[FieldProblem] = field(default_factory=list)


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    return "" if part is None else str(part.get_content())


def render_preview(text_footer: str, html_footer: str, public_base_url: str) -> Preview:
    """The two parts for the sample contact, or the problems that stop the footers. Takes up
    to the rendering budget: call it off the event loop."""
    try:
        settings = MarketingSettings.model_validate(
            {
                "text_footer": text_footer.replace("\r\n", "\n"),
                "html_footer": html_footer.replace("\r\n", "\n"),
                "public_base_url": public_base_url,
            }
        )
    except ValidationError as error:
        return Preview(problems=problems_of(error))
    problems = check_footers(settings)
    if problems:
        return Preview(problems=problems)
    base = settings.public_base_url
    recipient = replace(
        SAMPLE_RECIPIENT,
        unsubscribe_url=f"{base}/unsubscribe/sample-contact-token",
        manage_url=f"{base}/preferences/sample-contact-token",
        one_click_url=f"{base}/unsubscribe/sample-contact-token",
    )
    content = MessageContent(
        subject="Footer preview",
        html=SAMPLE_HTML,
        text=SAMPLE_TEXT,
        from_name="Mailroom",
        from_email="preview@example.com",
        text_footer=settings.text_footer,
        html_footer=settings.html_footer,
    )
    try:
        data = compile_message(content).render(recipient)
    except TemplateProblem as problem:
        return Preview(problems=[FieldProblem("footers", str(problem))])
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return Preview(text=_part(message, "plain"), html=_part(message, "html"))
