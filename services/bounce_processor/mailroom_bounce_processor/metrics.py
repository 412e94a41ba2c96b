"""The bounce processor's metrics (Prometheus), in the style of mailroom_common.metrics."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES = Counter(
    "mailroom_bounce_messages_total",
    "Messages taken from the bounce mailbox, by outcome (bounce, not_bounce, unparsed, duplicate).",
    ["outcome"],
)
BOUNCES = Counter(
    "mailroom_bounces_total",
    "Bounced recipients recorded, by kind (hard, soft, complaint) and action.",
    ["kind", "action"],
)
SUPPRESSIONS = Counter(
    "mailroom_bounce_suppressions_total",
    "Addresses suppressed by the bounce processor, by reason.",
    ["reason"],
)
UNVERIFIED = Counter(
    "mailroom_bounces_unverified_total",
    "Bounced recipients and complaints recorded without proof (no signed VERP address or"
    " Message-ID of theirs): kept for a person to look at, they change nothing.",
    ["kind"],
)
MAILBOX_ERRORS = Counter(
    "mailroom_bounce_mailbox_errors_total",
    "Failed connections or sessions with the bounce mailbox, by stage"
    " (connect, login, select, session).",
    ["stage"],
)
WEBHOOK_CALLS = Counter(
    "mailroom_bounce_webhook_calls_total",
    "Calls to the provider webhooks, by provider and outcome (accepted, or why refused:"
    " bad_signature, stale, replayed, unauthenticated, too_large, ...).",
    ["provider", "outcome"],
)
