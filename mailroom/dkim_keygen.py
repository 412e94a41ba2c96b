"""`mailroom settings dkim-keygen`: a new DKIM key pair, the settings change that stores its
private key (through the admin API, like `mailroom settings set`) and its DNS TXT record.

An RSA key becomes the active key when none is set; otherwise it is stored as the next key
(rotation: publish its record, then `mailroom settings set smtp dkim_selector=NEW` makes it
active, and the old selector becomes dkim_previous_selector). An Ed25519 key (`--ed25519`)
replaces the second signature's key at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mailroom_common.dkim_signing import dns_record, new_private_key

MASK = "********"  # how the admin API shows a key that is set


class KeygenRefused(ValueError):
    """The key cannot be made as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Keygen:
    domain: str
    selector: str
    stored_as: Literal["active", "next", "ed25519"]
    changes: dict[str, Any]  # the PUT /settings/smtp body (holds the private key)
    record: str

    def summary(self) -> dict[str, str]:
        """What the command reports (never the private key)."""
        return {
            "domain": self.domain,
            "selector": self.selector,
            "stored_as": self.stored_as,
            "record": self.record,
        }


def default_selector(ed25519: bool, now: datetime | None = None) -> str:
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"mr{day}{'e' if ed25519 else ''}"


def plan_keygen(
    current: dict[str, Any], selector: str | None, domain: str | None, ed25519: bool
) -> Keygen:
    """`current` is the smtp group as the admin API shows it (keys masked)."""
    signing_domain = str(current.get("dkim_domain") or "")
    from_domain = str(current.get("from_email", "")).rpartition("@")[2]
    chosen = (domain or signing_domain or from_domain).lower().rstrip(".")
    if not chosen:
        raise KeygenRefused("no domain: pass --domain")
    if signing_domain and chosen != signing_domain.lower():
        raise KeygenRefused(
            f"messages are signed for {signing_domain}: a key for another domain replaces"
            " every key (set dkim_domain and the keys with `mailroom settings set smtp`)"
        )
    name = selector or default_selector(ed25519)
    in_use = {current.get(f) for f in ("dkim_selector", "dkim_next_selector")} - {"", None}
    if ed25519:
        in_use.discard(current.get("dkim_ed25519_selector"))
        in_use |= {current.get("dkim_selector"), current.get("dkim_previous_selector")} - {""}
    else:
        in_use |= {current.get("dkim_ed25519_selector"), current.get("dkim_previous_selector")}
    if name in in_use:
        raise KeygenRefused(f"the selector {name!r} is in use: a new key needs a new selector")
    pem = new_private_key("ed25519-sha256" if ed25519 else "rsa-sha256")
    has_active = current.get("dkim_private_key") == MASK
    if ed25519:
        if not has_active:
            raise KeygenRefused("make the RSA key first (dkim-keygen without --ed25519)")
        stored_as: Literal["active", "next", "ed25519"] = "ed25519"
        changes = {"dkim_ed25519_selector": name, "dkim_ed25519_private_key": pem}
    elif has_active:
        stored_as = "next"
        changes = {"dkim_next_selector": name, "dkim_next_private_key": pem}
    else:
        stored_as = "active"
        changes = {"dkim_domain": chosen, "dkim_selector": name, "dkim_private_key": pem}
    return Keygen(chosen, name, stored_as, changes, dns_record(name, chosen, pem))


NEXT_STEPS = {
    "active": "signing with it from now on: publish this record now",
    "next": "stored as the next key, not used yet: publish this record, wait for it to be"
    " visible, then `mailroom settings set smtp dkim_selector={selector}` makes it active"
    " (keep the old selector's record published for a week after that)",
    "ed25519": "the second signature (ed25519-sha256) uses it from now on: publish this record",
}
