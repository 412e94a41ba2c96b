"""parse_bounce: put the detectors together and decide."""

from __future__ import annotations

from dataclasses import replace
from email.message import Message

from . import amazonses, arf, autoreply, dsn, heuristics
from .context import MessageContext, build_context
from .flufl_adapter import flufl_failures
from .mime import get_header, parse_bytes
from .models import COMPLAINT, DELAYED, FAILED, HARD, SOFT, BouncedRecipient, BounceReport
from .original import original_headers, original_message_id, verp_address
from .status import (
    find_reply_code,
    find_status,
    is_delay_notice,
    kind_from_phrases,
    kind_from_reply,
    kind_from_status,
    significance,
)


def parse_bounce(raw: bytes) -> BounceReport:
    """Classify one incoming message (the raw bytes as received).

    Never raises for byte input: a message that cannot be read at all gives
    ``is_bounce=False`` with the problem in ``reason``.
    """
    try:
        data = bytes(raw)
    except Exception as exc:
        return BounceReport(False, None, None, None, reason=f"not bytes: {type(exc).__name__}")
    try:
        msg = parse_bytes(data)
    except (Exception, RecursionError) as exc:
        return BounceReport(False, None, None, None, reason=f"unparseable: {type(exc).__name__}")
    try:
        return _classify(msg)
    except (Exception, RecursionError) as exc:  # pragma: no cover - defensive
        return BounceReport(
            False, None, None, None, reason=f"parser error: {type(exc).__name__}: {exc}"[:200]
        )


def _report(
    ctx: MessageContext,
    *,
    is_bounce: bool,
    kind: str | None,
    action: str | None,
    status: str | None,
    recipients: tuple[BouncedRecipient, ...],
    reason: str,
) -> BounceReport:
    return BounceReport(
        is_bounce=is_bounce,
        kind=kind,
        action=action,
        status=status,
        recipients=recipients,
        original_message_id=original_message_id(ctx.original),
        original_headers=original_headers(ctx.original),
        verp_address=verp_address(ctx.msg),
        reason=reason,
    )


def _summarise(
    ctx: MessageContext, recipients: list[BouncedRecipient], reason: str
) -> BounceReport:
    """A bounce report from per-recipient results (failed before delayed)."""
    failed = [r for r in recipients if r.action != DELAYED]
    pool = failed or recipients
    action = FAILED if failed else DELAYED
    best = max(pool, key=lambda r: significance(r.status)) if pool else None
    status = best.status if best else None
    kinds = {r.kind for r in pool if r.kind}
    if action == DELAYED:
        kind: str | None = SOFT
    elif HARD in kinds:
        kind = HARD
    elif SOFT in kinds:
        kind = SOFT
    else:
        kind = kind_from_status(status) or HARD
    unique: dict[str, BouncedRecipient] = {}
    for r in recipients:
        unique.setdefault(r.address, r)
    return _report(
        ctx,
        is_bounce=True,
        kind=kind,
        action=action,
        status=status,
        recipients=tuple(unique.values()),
        reason=reason,
    )


def _addressing_status(status: str | None) -> bool:
    """X.1.x (address) and X.2.x (mailbox) statuses are real delivery failures."""
    return bool(status) and status is not None and status.split(".")[1] in ("1", "2")


def _from_ses(ctx: MessageContext, ses: amazonses.SesNotification) -> BounceReport:
    """The notification's report, with the original's envelope sender and Message-ID as
    the evidence of which email it is about (verified by the caller, like any other)."""
    report = _ses_report(ctx, ses)
    return replace(
        report,
        verp_address=report.verp_address or ses.source,
        original_message_id=report.original_message_id or ses.message_id,
    )


def _ses_report(ctx: MessageContext, ses: amazonses.SesNotification) -> BounceReport:
    if ses.notification_type == "bounce" and ses.recipients:
        recipients = [
            BouncedRecipient(r.address, r.action, r.status, r.diagnostic, r.kind)
            for r in ses.recipients
        ]
        return _summarise(ctx, recipients, "Amazon SES bounce notification")
    if ses.notification_type == "complaint":
        return _report(
            ctx,
            is_bounce=False,
            kind=COMPLAINT,
            action=None,
            status=None,
            recipients=tuple(
                BouncedRecipient(r.address, None, None, None, None) for r in ses.recipients
            ),
            reason="Amazon SES complaint notification",
        )
    return _report(
        ctx,
        is_bounce=False,
        kind=None,
        action=None,
        status=None,
        recipients=(),
        reason=f"Amazon SES {ses.notification_type or 'unknown'} notification",
    )


def _returned_something(ctx: MessageContext) -> bool:
    """A returned original, or a null envelope sender (RFC 5321 section 4.5.5)."""
    if ctx.original is not None:
        return True
    return ctx.msg.get("return-path") is not None and get_header(
        ctx.msg, "return-path"
    ).strip() in ("<>", "")


def _classify(msg: Message) -> BounceReport:
    ctx = build_context(msg)

    if arf.is_arf(ctx):
        complaint = arf.parse_complaint(ctx)
        return _report(
            ctx,
            is_bounce=False,
            kind=COMPLAINT,
            action=None,
            status=None,
            recipients=tuple(
                BouncedRecipient(a, None, None, None, None) for a in complaint.recipients
            ),
            reason=f"ARF feedback report ({complaint.feedback_type or 'unknown type'})",
        )

    # Amazon SES notifications forwarded as e-mail (JSON).
    ses = amazonses.parse_ses(ctx.notification)
    if ses is not None:
        return _from_ses(ctx, ses)

    # 1. RFC 3464 delivery status notifications.
    dsn_texts = list(ctx.delivery_status)
    if not dsn_texts and dsn.looks_like_dsn_text(ctx.full_text):
        dsn_texts.append(ctx.full_text)
    dsn_recipients = [r for text in dsn_texts for r in dsn.parse_dsn_text(text)]
    if dsn_recipients:
        bad = [r for r in dsn_recipients if r.action in (FAILED, DELAYED)]
        if not bad:
            return _report(
                ctx,
                is_bounce=False,
                kind=None,
                action=None,
                status=None,
                recipients=(),
                reason="DSN reports only success (delivered/relayed/expanded)",
            )
        challenge = autoreply.challenge_reason(ctx, [r.diagnostic or "" for r in bad])
        if challenge is not None and not any(_addressing_status(r.status) for r in bad):
            return _report(
                ctx,
                is_bounce=False,
                kind=None,
                action=None,
                status=None,
                recipients=(),
                reason=f"not a bounce: {challenge}",
            )
        return _summarise(
            ctx,
            [BouncedRecipient(r.address, r.action, r.status, r.diagnostic, r.kind) for r in bad],
            "RFC 3464 delivery status notification",
        )

    # 2. Auto-replies, receipts, challenge-response (unless the headers say bounce).
    strong = heuristics.strong_bounce_hint(ctx)
    if strong is None:
        auto = autoreply.auto_reply_reason(ctx)
        if auto is not None:
            return _report(
                ctx,
                is_bounce=False,
                kind=None,
                action=None,
                status=None,
                recipients=(),
                reason=f"not a bounce: {auto}",
            )

    # 3. Non-standard bounces: flufl.bounce plus our own detectors.
    temporary, permanent = flufl_failures(msg)
    temporary = heuristics.plausible(ctx, temporary)
    permanent = heuristics.plausible(ctx, permanent)
    findings = heuristics.detect(ctx)
    bounce_hint = strong or heuristics.looks_like_bounce(ctx)
    diag_by_address = {f.address: f.diagnostic for f in findings}
    if temporary or permanent:
        addresses = list(dict.fromkeys([*sorted(permanent), *sorted(temporary)]))
        for address in addresses:
            if not diag_by_address.get(address):
                diag_by_address[address] = heuristics.diagnostic_for(ctx, address)
    elif strong is not None or (bounce_hint is not None and _returned_something(ctx)):
        # Bounce wording alone (no daemon sender / bounce subject) also needs a
        # returned original or a null envelope sender: people quote errors too.
        addresses = list(diag_by_address)
    else:
        addresses = []
    credible = strong is not None or (bounce_hint is not None and _returned_something(ctx))
    if not addresses and not credible:
        return _report(
            ctx,
            is_bounce=False,
            kind=None,
            action=None,
            status=None,
            recipients=(),
            reason="no bounce evidence",
        )
    text = ctx.notification
    delay_notice = is_delay_notice(ctx.subject, text)
    global_status = find_status(text)
    global_kind = (
        kind_from_status(global_status)
        or kind_from_reply(find_reply_code(text))
        or kind_from_phrases(text)
    )
    recipients: list[BouncedRecipient] = []
    for address in addresses:
        diagnostic = diag_by_address.get(address)
        status = find_status(diagnostic) or global_status
        kind = (
            kind_from_status(find_status(diagnostic))
            or kind_from_reply(find_reply_code(diagnostic))
            or kind_from_phrases(diagnostic)
        )
        if delay_notice or (address in temporary and address not in permanent):
            action = DELAYED
            kind = SOFT
        else:
            action = FAILED
            kind = kind or global_kind or HARD
        recipients.append(BouncedRecipient(address, action, status, diagnostic, kind))
    source = "flufl.bounce" if (temporary or permanent) else "heuristics"
    if not recipients:
        fallback = heuristics.single_original_recipient(ctx)
        if fallback is not None:
            kind = global_kind or HARD
            recipients.append(
                BouncedRecipient(
                    fallback,
                    DELAYED if delay_notice else FAILED,
                    global_status,
                    None,
                    SOFT if delay_notice else kind,
                )
            )
            source = "recipient taken from the returned original's To"
    if not recipients:
        return _report(
            ctx,
            is_bounce=True,
            kind=SOFT if delay_notice else (global_kind or HARD),
            action=DELAYED if delay_notice else FAILED,
            status=global_status,
            recipients=(),
            reason=f"bounce without recipients ({bounce_hint})",
        )
    return _summarise(ctx, recipients, f"non-standard bounce ({source})")
