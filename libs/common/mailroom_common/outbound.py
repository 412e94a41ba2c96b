"""One recipient's outbound email, the same for campaigns and autoresponders: merge fields,
the footer's signed links, a deterministic Message-ID, the VERP return path and the DKIM
signatures.

Domains: with DKIM on and the From address at the DKIM domain or under it, the Message-ID
is at the DKIM domain (aligned with From); otherwise at MAILROOM_MESSAGE_ID_DOMAIN. The
return path is at the first of MAILROOM_BOUNCE_DOMAIN and MAILROOM_BOUNCE_DOMAINS aligned
with the From domain (each one's MX reaches the bounce mailbox), else at
MAILROOM_BOUNCE_DOMAIN. The bounce processor matches Message-IDs and VERP addresses by their
signature, whatever their domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncpg import Record

from mailroom_common.dkim_signing import DkimSigner, dkim_signer
from mailroom_common.events import OutboundEmail
from mailroom_common.rendering import CompiledMessage, Recipient
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.settings import Settings
from mailroom_common.signing import Signer


@dataclass(frozen=True)
class Sending:
    """How the messages from one From address go out: their DKIM signer (None: unsigned)
    and the domains of their Message-IDs and return path."""

    dkim: DkimSigner | None
    message_id_domain: str
    bounce_domain: str


def sending_for(account: SmtpAccount, from_email: str, settings: Settings) -> Sending:
    """Once per batch (the keys are loaded once per settings version). Raises KeyProblem
    for a stored key that cannot sign (the config API refuses such keys)."""
    dkim = dkim_signer(
        account.dkim_domain,
        [
            (account.dkim_selector, account.dkim_private_key.get_secret_value()),
            (account.dkim_ed25519_selector, account.dkim_ed25519_private_key.get_secret_value()),
        ],
    )
    aligned = dkim if dkim is not None and dkim.aligned(from_email) else None
    return Sending(
        dkim=dkim,
        message_id_domain=aligned.domain if aligned is not None else settings.message_id_domain,
        bounce_domain=_bounce_domain(from_email, aligned, settings),
    )


def _under(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def _bounce_domain(from_email: str, dkim: DkimSigner | None, settings: Settings) -> str:
    """The first bounce domain at or under the From domain, or under the DKIM domain that
    From is aligned with (relaxed alignment, the DKIM domain taken as the organisational
    one); else MAILROOM_BOUNCE_DOMAIN."""
    parents = [from_email.rpartition("@")[2].lower().rstrip(".")]
    if dkim is not None:
        parents.append(dkim.domain.lower())
    for candidate in (settings.bounce_domain, *settings.bounce_domains):
        domain = candidate.lower().rstrip(".")
        if any(_under(domain, parent) for parent in parents):
            return candidate
    return settings.bounce_domain


def render_outbound(
    compiled: CompiledMessage,
    row: Record | Mapping[str, Any],
    *,
    item_ref: str,
    source: str,
    base_url: str,
    signer: Signer,
    sending: Sending,
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
        message_id=signer.message_id(item_ref, source, sending.message_id_domain),
        unsubscribe_url=unsubscribe_url,
        manage_url=f"{base_url}/preferences/{manage}",
        one_click_url=unsubscribe_url,
        extra_headers=(("X-Mailroom-Item", item_ref),),
    )
    message = compiled.render(recipient)
    if sending.dkim is not None:
        message = sending.dkim.sign(message)
    return OutboundEmail(
        item_id=row["id"],
        recipient=row["email"],
        envelope_from=signer.verp_address(item_ref, sending.bounce_domain),
        message=message.decode("ascii"),
    )
