"""The benchmark's campaign content: the demo newsletter, padded to about --size bytes, and
messages rendered exactly as the message processor renders them (for the bare SMTP loop)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mailroom_common.events import OutboundEmail
from mailroom_common.outbound import render_outbound, sending_for
from mailroom_common.runtime_settings import MarketingSettings, SmtpAccount
from mailroom_common.settings import Settings
from mailroom_common.signing import Signer
from mailroom_message_processor.public import compile_campaign

from mailroom.campaigns import NewCampaign

NEWSLETTER = (Path(__file__).parent.parent / "demo_templates" / "newsletter.html").read_text()
PARAGRAPH = (
    "<p>News from the garden shop: seed trays, pruning shears and herb planters are back,"
    " with tips for a spring that starts early &amp; a summer that lasts.</p>\n"
)
SAMPLE_ITEM_ID = 10**12  # item ids of rendered samples: never a real item's


def campaign_content(name: str, list_name: str, paragraphs: int) -> NewCampaign:
    html = NEWSLETTER.replace("</body>", PARAGRAPH * paragraphs + "</body>")
    return NewCampaign(
        name=name,
        subject="What's new, {{ contact.first_name }}",
        from_email="news@mailroom.test",
        from_name="Mailroom Bench",
        html_template=html,
        text_template=None,
        lists=[list_name],
    )


def signer_of(settings: Settings) -> Signer:
    previous = settings.signing_key_previous
    return Signer(
        settings.signing_key.get_secret_value().encode(),
        previous.get_secret_value().encode() if previous else None,
    )


def render_messages(
    settings: Settings,
    campaign: Mapping[str, Any],
    contacts: Sequence[Mapping[str, Any]],
    marketing: MarketingSettings | None = None,
    account: SmtpAccount | None = None,
) -> list[OutboundEmail]:
    """The messages the pipeline would send `contacts` for `campaign` (a campaigns row),
    with item ids that belong to no item."""
    marketing = marketing or MarketingSettings()
    compiled = compile_campaign(campaign, marketing)
    signer = signer_of(settings)
    sending = sending_for(account or SmtpAccount(), campaign["from_email"], settings)
    source = f"c{campaign['id']}"
    emails = []
    for number, contact in enumerate(contacts):
        item_id = SAMPLE_ITEM_ID + number
        row = {**contact, "id": item_id, "contact_id": contact.get("contact_id", item_id)}
        emails.append(
            render_outbound(
                compiled,
                row,
                item_ref=str(item_id),
                source=source,
                base_url=marketing.public_base_url.rstrip("/"),
                signer=signer,
                sending=sending,
            )
        )
    return emails


def campaign_row(content: NewCampaign, campaign_id: int = 1) -> dict[str, Any]:
    """The campaign as `render_messages` reads it from the database."""
    return {
        "id": campaign_id,
        "name": content.name,
        "subject": content.subject,
        "html_template": content.html_template,
        "text_template": content.text_template,
        "from_name": content.from_name,
        "from_email": content.from_email,
        "reply_to": content.reply_to,
    }


def _sample_size(settings: Settings, paragraphs: int) -> int:
    campaign = campaign_row(campaign_content("Bench", "bench", paragraphs))
    contact = {
        "email": "reader00001@example.com",
        "first_name": "Reader1",
        "last_name": "Demo",
        "attributes": {"plan": "pro"},
    }
    (email,) = render_messages(settings, campaign, [contact])
    return len(email.message)


def paragraphs_for(settings: Settings, size: int | None) -> int:
    """How many padding paragraphs make a message of about `size` bytes (0: as small as the
    newsletter is). Each paragraph shows in the HTML part and in the text derived from it."""
    if size is None:
        return 0
    bare = _sample_size(settings, 0)
    if size <= bare:
        return 0
    per_paragraph = (_sample_size(settings, 10) - bare) / 10
    return round((size - bare) / per_paragraph)
