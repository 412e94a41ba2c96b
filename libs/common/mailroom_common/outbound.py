"""One recipient's outbound email, the same for campaigns and autoresponders: merge fields,
the footer's signed links, a deterministic Message-ID and the VERP return path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncpg import Record

from mailroom_common.events import OutboundEmail
from mailroom_common.rendering import CompiledMessage, Recipient
from mailroom_common.settings import Settings
from mailroom_common.signing import Signer


def render_outbound(
    compiled: CompiledMessage,
    row: Record | Mapping[str, Any],
    *,
    item_ref: str,
    source: str,
    base_url: str,
    signer: Signer,
    settings: Settings,
) -> OutboundEmail:
    """`row` carries the item's id, contact_id, email, first_name, last_name and attributes;
    `item_ref` is "123" (campaign item) or "a123" (autoresponder item), `source` "c<id>" or
    "a<id>". Raises RecipientProblem when this recipient cannot be rendered."""
    fields: dict[str, Any] = dict(row["attributes"] or {})
    fields.update(email=row["email"], first_name=row["first_name"], last_name=row["last_name"])
    unsubscribe = signer.link_token(row["contact_id"], source, "unsubscribe")
    manage = signer.link_token(row["contact_id"], source, "manage")
    unsubscribe_url = f"{base_url}/unsubscribe/{unsubscribe}"
    recipient = Recipient(
        email=row["email"],
        name=f"{row['first_name']} {row['last_name']}".strip(),
        fields=fields,
        message_id=signer.message_id(item_ref, source, settings.message_id_domain),
        unsubscribe_url=unsubscribe_url,
        manage_url=f"{base_url}/preferences/{manage}",
        one_click_url=unsubscribe_url,
        extra_headers=(("X-Mailroom-Item", item_ref),),
    )
    message = compiled.render(recipient)
    return OutboundEmail(
        item_id=row["id"],
        recipient=row["email"],
        envelope_from=signer.verp_address(item_ref, settings.bounce_domain),
        message=message.decode("ascii"),
    )
