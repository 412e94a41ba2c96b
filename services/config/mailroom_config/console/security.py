"""What every console response and every console form goes through: the security headers
(a strict Content-Security-Policy: scripts and styles only from our own files), the
same-origin check of a POST, and the strict reading of a url-encoded form."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
# the footer preview: a rendered email (inline styles are the norm there), shown in the
# console's own frame, with nothing able to run or load, and sandboxed (opened on its own
# too): no refresh or link can take the frame or the console elsewhere
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none';"
    " frame-ancestors 'self'; base-uri 'none'; sandbox"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
MAX_FIELDS = 100
FORM_TYPE = "application/x-www-form-urlencoded"


class SecurityHeaders:
    """Adds the headers to every response of the console (a response that set its own
    Content-Security-Policy keeps it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


def is_https(request: Request) -> bool:
    """Whether the browser talks https to us (directly or through a proxy that says so):
    the session cookie is then Secure. Believing the header is safe here: it can only make
    the cookie stricter."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def cross_origin(request: Request) -> str | None:
    """Why a POST must be refused as coming from another site, or None.

    A browser names the page a form was sent from (Origin, Sec-Fetch-Site); it must be this
    very site. A client that sends neither (a script) still needs the session and its CSRF
    token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"the form came from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    hosts = {request.headers.get("host", "")}
    hosts.update(h.strip() for h in request.headers.get("x-forwarded-host", "").split(","))
    netloc = urlsplit(origin).netloc if origin != "null" else ""
    if not netloc or netloc not in hosts:
        return "the form came from another origin"
    return None


class BadForm(Exception):
    """The body is not a form the console reads; str() says why."""


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form (UTF-8, at most MAX_FIELDS fields; the body is already limited by
    the config service's BodyLimit). A repeated field keeps its last value."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise BadForm(f"expected a form ({FORM_TYPE})")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadForm(f"not a UTF-8 form of at most {MAX_FIELDS} fields") from None
    return dict(pairs)
