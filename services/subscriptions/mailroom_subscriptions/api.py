"""The public pages of the footer's two links (FastAPI), served by the subscriptions service.

    GET  /unsubscribe/{token}    a page with a confirm button (a GET never changes anything:
                                 mail scanners follow links)
    POST /unsubscribe/{token}    the confirm button, and RFC 8058 one-click
                                 (body `List-Unsubscribe=One-Click`): unsubscribes at once,
                                 answers 200 with the confirmation page, never redirects
    GET  /preferences/{token}    the contact's lists with their state
    POST /preferences/{token}    action=save with the checked `list` ids, or action=everything

The token is the capability (HMAC-signed contact, source and purpose): the forms post to the
token URL itself, no cookies are set, so there is no session to forge a request against. A
token that is malformed, tampered with, signed by an unknown key, of the other purpose or for
a contact that no longer exists gets one and the same 404 page; so does any other path.

Bodies are limited before they are read (requests.BodyLimit: 413 past 64 KB, declared or
chunked) and every unreadable request gets a 4xx page saying what was wrong (requests.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from mailroom_common import activity
from mailroom_common.events import Activity, ActivityKind, ContactUnsubscribed
from mailroom_common.runtime import Runtime
from mailroom_common.signing import InvalidToken, LinkClaims, Purpose
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from mailroom_subscriptions import pages, store
from mailroom_subscriptions.i18n import choose_language
from mailroom_subscriptions.requests import (
    MAX_BODY_BYTES,
    MAX_FIELDS,
    BadRequest,
    BodyLimit,
    read_form,
)

log = logging.getLogger(__name__)

PATHS = ("/unsubscribe", "/preferences")
INVALID_STATUS = 404
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058
CONFIRM = ("confirm", "yes")  # the confirm button of the unsubscribe page
ACTIONS = ("save", "everything")
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Vary": "Accept-Language",
}

UNSUBSCRIBES = Counter(
    "mailroom_unsubscribes_total",
    "Unsubscribes that changed something, by how (one_click, confirm, preferences, everything).",
    ["how"],
)
REFUSED_TOKENS = Counter("mailroom_refused_tokens_total", "Unusable link tokens presented.")
REFUSED_REQUESTS = Counter(
    "mailroom_refused_requests_total",
    "Requests to the public pages refused with a 4xx, by reason (too_large, bad_utf8, ...).",
    ["reason"],
)


def _html(language: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**HEADERS, "Content-Language": language})


def _refusal(language: str, error: BadRequest) -> HTMLResponse:
    REFUSED_REQUESTS.labels(error.reason).inc()
    page = pages.error(language, error.reason, limit=MAX_BODY_BYTES // 1024, fields=MAX_FIELDS)
    response = _html(language, page, error.status)
    if error.status == 413:  # the rest of the body is not read: end the connection
        response.headers["Connection"] = "close"
    return response


async def _refuse_early(scope: Scope, receive: Receive, send: Send, error: BadRequest) -> None:
    language = choose_language(Request(scope).headers.get("accept-language"))
    await _refusal(language, error)(scope, receive, send)


def _list_ids(fields: list[tuple[str, str]]) -> set[int]:
    values = [v for k, v in fields if k == "list"]
    if not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in values):
        raise BadRequest(400, "bad_list")
    return {int(v) for v in values}


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="Mailroom subscriptions", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, refuse=_refuse_early)
    pool = runtime.pool
    signer = runtime.signer

    def language_of(request: Request) -> str:
        return choose_language(request.headers.get("accept-language"))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> HTMLResponse:
        return _refusal(language_of(request), error)

    @app.exception_handler(HTTPException)
    async def no_such_page(request: Request, error: HTTPException) -> HTMLResponse:
        """Any other path (e.g. `/unsubscribe/../x`): the invalid-link page; another method:
        a page saying so."""
        if error.status_code == INVALID_STATUS:
            return refused(request)
        response = _refusal(language_of(request), BadRequest(error.status_code, "method"))
        response.headers.update(error.headers or {})
        return response

    def refused(request: Request) -> HTMLResponse:
        REFUSED_TOKENS.inc()
        language = language_of(request)
        return _html(language, pages.invalid(language), INVALID_STATUS)

    async def holder(token: str, purpose: Purpose) -> tuple[LinkClaims, store.Contact] | None:
        try:
            claims = signer.verify_link_token(token)
        except InvalidToken:
            return None
        if claims.purpose != purpose:
            return None
        contact = await store.find_contact(pool, claims.contact_id)
        return None if contact is None else (claims, contact)

    def manage_url(claims: LinkClaims) -> str:
        # relative to /unsubscribe/<token>: right behind any reverse-proxy path prefix too
        return f"../preferences/{signer.link_token(claims.contact_id, claims.source, 'manage')}"

    async def names(email: str, list_ids: list[int] | None) -> list[str]:
        lists = await store.memberships(pool, email)
        return [m.name for m in lists if list_ids is None or m.list_id in list_ids]

    async def tell_crm(change: store.Change, source: str, kind: ActivityKind) -> None:
        """The change on the CRM's timeline (contact.activity)."""
        if not change.preferences_changed:
            return
        origin = store.parse_source(source)
        entry = Activity(
            kind=kind,
            contact_id=change.contact.id,
            crm_contact_id=change.contact.crm_id,
            email=change.contact.email,
            at=datetime.now(UTC),
            campaign_id=origin[1] if origin and origin[0] == "campaign" else None,
            autoresponder_id=origin[1] if origin and origin[0] == "autoresponder" else None,
            list_ids=change.unsubscribed,
            joined_list_ids=change.resubscribed,
        )
        await activity.publish_news(runtime, [entry])

    async def announce(
        change: store.Change, source: str, everything: bool, kind: ActivityKind = "unsubscribed"
    ) -> None:
        await tell_crm(change, source, kind)
        if not change.anything:
            return
        event = ContactUnsubscribed(
            contact_id=change.contact.id,
            email=change.contact.email,
            list_ids=change.unsubscribed,
            source=source,
            everything=everything,
        )
        try:
            await runtime.announce(event)
        except Exception:
            # committed already: the contact is unsubscribed whatever the broker says
            log.exception("contact.unsubscribed for contact %d not published", change.contact.id)

    @app.get("/unsubscribe/{token}")
    async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
        found = await holder(token, "unsubscribe")
        if found is None:
            return refused(request)
        claims, contact = found
        lists = await store.source_lists(pool, claims.source)
        everything = lists is None
        language = language_of(request)
        shown = [] if everything else await names(contact.email, lists or None)
        page = pages.unsubscribe_form(
            language, contact.email, shown, everything, manage_url(claims)
        )
        return _html(language, page)

    @app.post("/unsubscribe/{token}")
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        found = await holder(token, "unsubscribe")
        if found is None:
            return refused(request)
        claims, _contact = found
        fields = await read_form(request)
        one_click = ONE_CLICK in fields
        if not one_click and CONFIRM not in fields:
            raise BadRequest(400, "no_action")
        lists = await store.source_lists(pool, claims.source)
        everything = lists is None
        # a campaign without lists (deleted since): every list of the contact, no suppression
        change = await store.unsubscribe(
            pool, claims.contact_id, lists or None, everything, claims.source
        )
        if change is None:
            return refused(request)
        if change.anything:
            UNSUBSCRIBES.labels("one_click" if one_click else "confirm").inc()
        log.info(
            "contact %d unsubscribed (%s, %s): lists %s, %d open items skipped",
            change.contact.id,
            claims.source,
            "one-click" if one_click else "confirmed",
            change.unsubscribed,
            change.skipped_items,
        )
        await announce(change, claims.source, everything)
        language = language_of(request)
        shown = [] if everything else await names(change.contact.email, lists or None)
        page = pages.unsubscribed(
            language, change.contact.email, shown, everything, manage_url(claims)
        )
        return _html(language, page)

    async def preferences_page(
        request: Request, contact: store.Contact, saved: bool = False
    ) -> HTMLResponse:
        language = language_of(request)
        lists = await store.memberships(pool, contact.email)
        suppressed = await store.is_suppressed(pool, contact.email)
        return _html(language, pages.preferences(language, contact.email, lists, suppressed, saved))

    @app.get("/preferences/{token}")
    async def show_preferences(token: str, request: Request) -> HTMLResponse:
        found = await holder(token, "manage")
        if found is None:
            return refused(request)
        return await preferences_page(request, found[1])

    @app.post("/preferences/{token}")
    async def change_preferences(token: str, request: Request) -> HTMLResponse:
        found = await holder(token, "manage")
        if found is None:
            return refused(request)
        claims, contact = found
        fields = await read_form(request)
        actions = [v for k, v in fields if k == "action"]
        if len(actions) != 1 or actions[0] not in ACTIONS:
            raise BadRequest(400, "bad_action")
        action = actions[0]
        wanted_lists = _list_ids(fields)
        if action == "everything":
            change = await store.unsubscribe(pool, contact.id, None, True, claims.source)
            if change is None:
                return refused(request)
            if change.anything:
                UNSUBSCRIBES.labels("everything").inc()
            await announce(change, claims.source, True)
        else:
            current = {m.list_id for m in await store.memberships(pool, contact.email)}
            wanted = wanted_lists & current
            change = await store.save_preferences(pool, contact.id, wanted, claims.source)
            if change is None:
                return refused(request)
            if change.anything:
                UNSUBSCRIBES.labels("preferences").inc()
            await announce(change, claims.source, False, "preferences_changed")
        log.info(
            "contact %d preferences (%s): left %s, back on %s, %d open items skipped",
            contact.id,
            action,
            change.unsubscribed,
            change.resubscribed,
            change.skipped_items,
        )
        return await preferences_page(request, contact, saved=True)

    return app
