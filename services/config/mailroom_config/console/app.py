"""The console's pages (Starlette, server-rendered Jinja2, one small script file).

    GET  /console/sign-in, POST /console/sign-in, POST /console/sign-out
    GET|POST /console/smtp            POST /console/smtp/test
    GET|POST /console/marketing       POST /console/marketing/restore, GET|POST .../preview
    GET|POST /console/bounce          POST /console/bounce/test
    GET  /console/jobs (+ /live)      POST /console/jobs/{name}/run
    GET  /console/campaigns (+ /live) GET|POST /console/campaigns/{id}/{pause|resume|cancel}

Every page but sign-in needs a session: a page without one redirects to sign-in, a form or a
live fragment answers 401. Every POST is refused (403, nothing read) when a browser says it
comes from another origin, and needs the session's CSRF token. The pages call what the admin
API calls (settings_ops, job_overview, campaign_lifecycle's commands), never the API itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from mailroom_common.addresses import AddressProblem, checked_address
from mailroom_common.campaign_lifecycle import CANCELLABLE_STATUSES, PAUSABLE_STATUSES
from mailroom_common.events import CampaignCancel, CampaignPause, CampaignResume, Event, JobRun
from mailroom_common.http import PEER
from mailroom_common.job_overview import JobRunRefused, JobsOverview, read_overview, run_request
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import DEFAULT_HTML_FOOTER, DEFAULT_TEXT_FOOTER
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailroom_config import settings_ops
from mailroom_config.console import forms
from mailroom_config.console.preview import render_preview
from mailroom_config.console.progress import SharedProgress
from mailroom_config.console.security import (
    PREVIEW_CSP,
    BadForm,
    SecurityHeaders,
    cross_origin,
    is_https,
    read_form,
)
from mailroom_config.console.sessions import (
    Session,
    Sessions,
    SignInThrottle,
    same_token,
    token_matches,
)
from mailroom_config.groups import FieldProblem, Invalid, ReadOnly

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "mailroom_console"
SECURE_COOKIE = "__Host-mailroom_console"  # a Secure cookie of this host only, path /
SIGN_IN_COOKIE = "mailroom_console_sign_in"  # binds the sign-in form to this browser
CAMPAIGNS_SHOWN = 50
HISTORY_SHOWN = 50
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
ACTIONS: dict[str, tuple[str, Callable[[int], Event]]] = {
    "pause": ("Pause", lambda i: CampaignPause(campaign_id=i)),
    "resume": ("Resume", lambda i: CampaignResume(campaign_id=i)),
    "cancel": ("Cancel", lambda i: CampaignCancel(campaign_id=i)),
}
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "pause": PAUSABLE_STATUSES,
    "resume": ("paused",),
    "cancel": CANCELLABLE_STATUSES,
}
ACTION_MEANS = {
    "pause": "Generation and sending stop at their next step; the work waits in the database"
    " until you resume.",
    "resume": "Sending continues where it stopped.",
    "cancel": "Every item not sent yet is skipped. This cannot be undone.",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


def _when(value: Any) -> str:
    if value is None:
        return "never"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mailroom_config.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


class Console:
    def __init__(self, current: Callable[[], Runtime]) -> None:
        self.current = current
        self.templates = _environment()
        self.throttle = SignInThrottle()
        self.progress = SharedProgress(CAMPAIGNS_SHOWN)
        self._sessions: Sessions | None = None
        self.static = {
            name: resources.files("mailroom_config.console").joinpath("static", name).read_bytes()
            for name in STATIC
        }

    # --- plumbing ----------------------------------------------------------------------

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            rt = self.current()
            self._sessions = Sessions(
                rt.pool,
                rt.settings.signing_key.get_secret_value(),
                rt.settings.console_session_minutes,
            )
        return self._sessions

    def render(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(path=request.url.path, **values)
        return HTMLResponse(html, status_code=status)

    def page(
        self,
        request: Request,
        session: Session,
        template: str,
        title: str,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        return self.render(request, template, status, session=session, title=title, **values)

    @staticmethod
    def _cookie(request: Request) -> str | None:
        return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)

    def signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The handler with its session; without one, a page redirects to sign-in and
        anything else answers 401. A POST must be same-origin and carry the CSRF token."""

        async def endpoint(request: Request) -> Response:
            posted = request.method == "POST"
            if posted and (why := cross_origin(request)) is not None:
                return PlainTextResponse(f"refused: {why}", status_code=403)
            session = await self.sessions.find(self._cookie(request))
            if session is None:
                if posted or request.url.path.endswith("/live"):
                    return PlainTextResponse(
                        "not signed in: sign in at /console/sign-in", status_code=401
                    )
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"{PREFIX}/sign-in?next={target}", status_code=303)
            if posted:
                try:
                    form = await read_form(request)
                except BadForm as bad:
                    return PlainTextResponse(f"refused: {bad}", status_code=400)
                if not same_token(form.get("csrf_token"), session.csrf):
                    return PlainTextResponse(
                        "refused: the form's CSRF token is missing or wrong (reload the page"
                        " and send it again)",
                        status_code=403,
                    )
                request.state.form = form
            return await handler(request, session)

        return endpoint

    # --- sign-in -----------------------------------------------------------------------

    def _proxy_user(self, request: Request) -> str | None:
        """Who the trusted proxy in front says this is, when one is configured and the
        request comes from it."""
        settings = self.current().settings
        header = settings.console_trusted_header
        # the connection's own address (the proxy), not the browser it names in X-Forwarded-For
        connected = request.scope.get(PEER) or request.scope.get("client")
        if not header or not connected:
            return None
        try:
            peer = ipaddress.ip_address(connected[0])
        except ValueError:
            return None
        trusted = any(
            peer in ipaddress.ip_network(net, strict=False)
            for net in settings.console_trusted_proxies
        )
        user = request.headers.get(header, "").strip()
        return user if trusted and user else None

    def _sign_in_page(
        self, request: Request, status: int = 200, problem: str | None = None, name: str = ""
    ) -> Response:
        nonce = request.cookies.get(SIGN_IN_COOKIE) or _random()
        next_path = _safe_next(request.query_params.get("next"))
        token = self.sessions.csrf_for(f"sign-in:{nonce}")
        admin_token = self.current().settings.admin_token
        token_set = admin_token is not None and bool(admin_token.get_secret_value())
        response = self.render(
            request,
            "sign_in.html",
            status,
            session=None,
            title="Sign in",
            csrf=token,
            problem=problem,
            name=name,
            next_path=next_path,
            proxy_user=self._proxy_user(request),
            token_set=token_set,
        )
        response.set_cookie(
            SIGN_IN_COOKIE,
            nonce,
            max_age=3600,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=is_https(request),
        )
        return response

    async def sign_in_form(self, request: Request) -> Response:
        return self._sign_in_page(request)

    async def sign_in(self, request: Request) -> Response:
        if (why := cross_origin(request)) is not None:
            return PlainTextResponse(f"refused: {why}", status_code=403)
        client = request.client.host if request.client else "?"
        wait = self.throttle.refused(client)
        if wait is not None:
            return PlainTextResponse(
                f"too many failed sign-ins: try again in {int(wait) + 1} s",
                status_code=429,
                headers={"Retry-After": str(int(wait) + 1)},
            )
        try:
            form = await read_form(request)
        except BadForm as bad:
            return PlainTextResponse(f"refused: {bad}", status_code=400)
        nonce = request.cookies.get(SIGN_IN_COOKIE, "")
        if not nonce or not same_token(
            form.get("csrf_token"), self.sessions.csrf_for(f"sign-in:{nonce}")
        ):
            return self._sign_in_page(
                request, 403, "The sign-in form expired: please sign in again."
            )
        proxy_user = self._proxy_user(request)
        if form.get("mode") == "proxy" and proxy_user:
            try:
                actor = settings_ops.actor_name(proxy_user, "name")
            except Invalid as invalid:
                return self._sign_in_page(request, 422, invalid.problems[0].problem)
        else:
            name = form.get("name", "").strip()
            try:
                actor = settings_ops.actor_name(name, "name")
            except Invalid as invalid:
                return self._sign_in_page(request, 422, invalid.problems[0].problem, name)
            if not name:
                return self._sign_in_page(
                    request, 422, "Give your name: the settings history records it.", name
                )
            token = self.current().settings.admin_token
            expected = _digest(token.get_secret_value()) if token is not None else None
            if not token_matches(form.get("token", ""), expected):
                await self.throttle.failed(client)
                log.warning("console: failed sign-in from %s", client)
                return self._sign_in_page(
                    request, 401, "That is not the admin token of this deployment.", name
                )
            self.throttle.succeeded(client)
        cookie = await self.sessions.create(actor)
        log.info("console: %s signed in", actor)
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        secure = is_https(request)
        response.set_cookie(
            SECURE_COOKIE if secure else COOKIE,
            cookie,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
        return response

    async def sign_out(self, request: Request, session: Session) -> Response:
        await self.sessions.end(self._cookie(request))
        log.info("console: %s signed out", session.actor)
        response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", status_code=303)
        for name in (COOKIE, SECURE_COOKIE):
            response.delete_cookie(
                name, path="/", secure=name == SECURE_COOKIE, httponly=True, samesite="strict"
            )
        return response

    # --- settings pages ------------------------------------------------------------------

    async def settings_page(
        self,
        request: Request,
        session: Session,
        group: str,
        status: int = 200,
        problems: list[FieldProblem] | None = None,
        posted: dict[str, str] | None = None,
        **values: Any,
    ) -> Response:
        rt = self.current()
        view = await settings_ops.group_view(rt, group)
        shown = forms.shown_values(group, view.settings, posted) if posted else view.settings
        history = await settings_ops.history(rt, group, 10)
        result = request.query_params.get("result")
        return self.page(
            request,
            session,
            f"{group}.html",
            TITLES[group],
            status,
            view=view,
            values=shown,
            fields=forms.FIELDS[group],
            errors={p.field: p.problem for p in problems or []},
            problems=problems or [],
            result=result if result in ("saved", "unchanged", "restored") else None,
            history=[entry for _, entry in history],
            clear_name=forms.clear_name,
            **values,
        )

    def _get(self, group: str) -> Handler:
        async def handler(request: Request, session: Session) -> Response:
            return await self.settings_page(request, session, group)

        return handler

    def _save(self, group: str) -> Handler:
        async def handler(request: Request, session: Session) -> Response:
            form: dict[str, str] = request.state.form
            try:
                result = await settings_ops.change_group(
                    self.current(), group, forms.changes_from(group, form), session.actor
                )
            except Invalid as invalid:
                return await self.settings_page(
                    request, session, group, 422, invalid.problems, form
                )
            except ReadOnly as refused:
                problem = [FieldProblem("(form)", str(refused))]
                return await self.settings_page(request, session, group, 409, problem, form)
            outcome = "saved" if result.changed else "unchanged"
            return RedirectResponse(f"{PREFIX}/{group}?result={outcome}", status_code=303)

        return handler

    async def smtp_test(self, request: Request, session: Session) -> Response:
        to = request.state.form.get("to", "")
        try:
            address = checked_address(to)
        except AddressProblem as error:
            problem = FieldProblem("to", str(error))
            return await self.settings_page(
                request, session, "smtp", 422, [problem], test_to=to, test=None
            )
        result = await settings_ops.test_smtp(self.current(), address)
        return await self.settings_page(request, session, "smtp", test_to=address, test=result)

    async def bounce_test(self, request: Request, session: Session) -> Response:
        result = await settings_ops.test_imap(self.current())
        return await self.settings_page(request, session, "bounce", test=result)

    async def restore_footer(self, request: Request, session: Session) -> Response:
        which = request.state.form.get("footer")
        defaults = {"text_footer": DEFAULT_TEXT_FOOTER, "html_footer": DEFAULT_HTML_FOOTER}
        if which not in defaults:
            return PlainTextResponse("refused: footer must be text_footer or html_footer", 400)
        await settings_ops.change_group(
            self.current(), "marketing", {which: defaults[which]}, session.actor
        )
        return RedirectResponse(f"{PREFIX}/marketing?result=restored", status_code=303)

    async def preview(self, request: Request, session: Session) -> Response:
        # what is being edited (posted), else what is stored
        values = dict((await settings_ops.group_view(self.current(), "marketing")).settings)
        if request.method == "POST":
            form: dict[str, str] = request.state.form
            values.update(
                {k: form[k] for k in ("text_footer", "html_footer", "public_base_url") if k in form}
            )
        text, html = values["text_footer"], values["html_footer"]
        base = values["public_base_url"]
        shown = await asyncio.to_thread(render_preview, text, html, base)
        response = self.render(request, "preview.html", preview=shown)
        response.headers["Content-Security-Policy"] = PREVIEW_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    # --- jobs ----------------------------------------------------------------------------

    async def _overview(self) -> JobsOverview:
        rt = self.current()
        try:
            connection = await rt.broker.connect()
        except Exception as error:
            log.warning("the job overview cannot read the queues: %r", error)
            connection = None
        return await read_overview(rt.pool, rt.topology, connection)

    async def jobs(self, request: Request, session: Session) -> Response:
        return self.page(
            request, session, "jobs.html", "Job Manager", overview=await self._overview()
        )

    async def jobs_live(self, request: Request, session: Session) -> Response:
        return self.render(
            request, "jobs_table.html", session=session, overview=await self._overview()
        )

    async def run_job(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        rt = self.current()
        try:
            run = await run_request(rt.pool, name)
        except JobRunRefused as refused:
            return self.page(
                request,
                session,
                "jobs.html",
                "Job Manager",
                404 if refused.unknown else 409,
                overview=await self._overview(),
                ran=None,
                refused=str(refused),
            )
        await rt.announce(JobRun(job=name))
        log.info("job.run published for %s by %s (console)", name, session.actor)
        return self.page(
            request, session, "jobs.html", "Job Manager", overview=await self._overview(), ran=run
        )

    # --- campaigns -----------------------------------------------------------------------

    async def campaigns(self, request: Request, session: Session) -> Response:
        rt = self.current()
        history = await settings_ops.history(rt, None, HISTORY_SHOWN)
        sent = request.query_params.get("sent")
        campaign = request.query_params.get("campaign", "")
        return self.page(
            request,
            session,
            "campaigns.html",
            "Campaigns",
            campaigns=await self.progress.campaigns(rt.pool),
            history=history,
            sent=sent if sent in ACTIONS else None,
            sent_campaign=int(campaign) if campaign.isdigit() and len(campaign) < 19 else None,
            **_campaign_rules(),
        )

    async def campaigns_live(self, request: Request, session: Session) -> Response:
        rt = self.current()
        return self.render(
            request,
            "campaigns_table.html",
            session=session,
            campaigns=await self.progress.campaigns(rt.pool),
            **_campaign_rules(),
        )

    async def campaign_action(self, request: Request, session: Session) -> Response:
        action = request.path_params["action"]
        campaign_id = request.path_params["campaign_id"]
        if action not in ACTIONS or campaign_id >= 2**63:
            return PlainTextResponse("no such page", status_code=404)
        rt = self.current()
        row = await rt.pool.fetchrow(
            "SELECT id, name, status FROM campaigns WHERE id = $1", campaign_id
        )
        if row is None:
            return PlainTextResponse(f"no campaign {campaign_id}", status_code=404)
        if row["status"] not in ALLOWED_FROM[action]:
            return PlainTextResponse(
                f"campaign {campaign_id} is {row['status']}: it cannot {action} now"
                " (back to /console/campaigns)",
                status_code=409,
            )
        if request.method == "POST":
            await rt.send_command(ACTIONS[action][1](campaign_id))
            log.info("campaign.%s sent for campaign %d by %s", action, campaign_id, session.actor)
            return RedirectResponse(
                f"{PREFIX}/campaigns?sent={action}&campaign={campaign_id}", status_code=303
            )
        return self.page(
            request,
            session,
            "confirm.html",
            f"{ACTIONS[action][0]} campaign {row['id']}?",
            campaign=dict(row),
            action=action,
            verb=ACTIONS[action][0],
            means=ACTION_MEANS[action],
        )

    # --- static --------------------------------------------------------------------------

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(
            self.static[name],
            media_type=STATIC[name],
            headers={"Cache-Control": "no-cache"},
        )

    async def home(self, request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


TITLES = {
    "smtp": "Email SMTP Configuration",
    "marketing": "Marketing Configuration",
    "bounce": "Bounce Configuration",
}


def _campaign_rules() -> dict[str, Any]:
    return {
        "pausable": PAUSABLE_STATUSES,
        "cancellable": CANCELLABLE_STATUSES,
    }


def _digest(token: str) -> bytes | None:
    return hashlib.sha256(token.encode()).digest() if token else None


def _random() -> str:
    return secrets.token_urlsafe(24)


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of ours, never another site."""
    # a browser decodes %2e and %2f (and %5c) in a path before resolving it
    plain = unquote(value) if value else ""
    if (
        value
        and value.startswith(PREFIX + "/")
        and "//" not in plain
        and ".." not in plain
        and "\\" not in plain
        and plain.isprintable()
        and len(value) < 200
        and not value.startswith(PREFIX + "/sign")
    ):
        return value
    return f"{PREFIX}/jobs"


def create_console(current: Callable[[], Runtime]) -> SecurityHeaders:
    console = Console(current)
    on = console.signed_in
    routes = [
        Route("/", console.home, methods=["GET"]),
        Route("/sign-in", console.sign_in_form, methods=["GET"]),
        Route("/sign-in", console.sign_in, methods=["POST"]),
        Route("/sign-out", on(console.sign_out), methods=["POST"]),
        Route("/static/{name}", console.static_file, methods=["GET"]),
        Route("/jobs", on(console.jobs), methods=["GET"]),
        Route("/jobs/live", on(console.jobs_live), methods=["GET"]),
        Route("/jobs/{name}/run", on(console.run_job), methods=["POST"]),
        Route("/campaigns", on(console.campaigns), methods=["GET"]),
        Route("/campaigns/live", on(console.campaigns_live), methods=["GET"]),
        Route(
            "/campaigns/{campaign_id:int}/{action}",
            on(console.campaign_action),
            methods=["GET", "POST"],
        ),
        Route("/smtp/test", on(console.smtp_test), methods=["POST"]),
        Route("/bounce/test", on(console.bounce_test), methods=["POST"]),
        Route("/marketing/restore", on(console.restore_footer), methods=["POST"]),
        Route("/marketing/preview", on(console.preview), methods=["GET", "POST"]),
    ]
    for group in ("smtp", "marketing", "bounce"):
        routes.append(Route(f"/{group}", on(console._get(group)), methods=["GET"]))
        routes.append(Route(f"/{group}", on(console._save(group)), methods=["POST"]))
    return SecurityHeaders(Starlette(routes=routes))
