"""Bad requests to the public pages (the footer's unsubscribe and preferences links), sent to
the subscriptions service running in its own process: oversized bodies (declared and
chunked, with the server's memory watched), too many fields, bad encodings, wrong content
types, forged and oversized tokens, path traversal, posts that do not say what to do.

What must hold: every bad request gets a 4xx page that says what was wrong, nobody's
subscriptions change, the body is never buffered past 64 KB, and the process still serves."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import asyncpg
import httpx
import pytest
from mailroom_common.signing import Purpose, Signer

from tests.catalogue.cases import Case, case_ids
from tests.support.environment import Installation
from tests.support.seed import make_audience, make_campaign

CASES = [
    Case(
        "public-01",
        "a chunked one-click POST streaming 100 MB (no Content-Length) to a valid link",
        "413 once 64 KB have arrived, the connection closed; the server's RSS stays flat"
        " (peak RSS grows under 20 MB); the contact stays subscribed",
    ),
    Case(
        "public-02",
        "a POST declaring Content-Length: 400 MB",
        "413 before any of the body is read; RSS flat; nothing changes",
    ),
    Case(
        "public-03",
        "a one-click POST with 1,001 form fields",
        '400 "The form has too many fields: at most 1000 are accepted."; nothing changes',
    ),
    Case(
        "public-04",
        "a url-encoded body that is not UTF-8 (raw 0xff bytes, and %ff percent-encoded)",
        '400 "not valid UTF-8 text"; nothing changes',
    ),
    Case(
        "public-05",
        "a url-encoded body that is not a form (`&&List-Unsubscribe&=`)",
        '400 "it is not correctly encoded"; nothing changes',
    ),
    Case(
        "public-06",
        "the one-click field sent as application/json, text/plain, or url-encoded latin-1",
        "415 naming the accepted content types (or UTF-8); nothing changes",
    ),
    Case(
        "public-07",
        "an unsubscribe link whose token is 10 KB long",
        "404, the invalid-link page; nothing changes",
    ),
    Case(
        "public-08",
        "path traversal: /unsubscribe/..%2F..%2Fetc%2Fpasswd, /preferences/../../etc/passwd",
        "404, the invalid-link page (HTML, no file, no stack trace)",
    ),
    Case(
        "public-09",
        "a token edited to name another contact, and a preferences token on /unsubscribe",
        "404, the invalid-link page; neither contact changes",
    ),
    Case(
        "public-10",
        "a POST to the unsubscribe link without List-Unsubscribe=One-Click (or confirm=yes):"
        " an empty body, List-Unsubscribe=Yes",
        '400 "The request does not say what to do: ... List-Unsubscribe=One-Click ..."; the'
        " contact stays subscribed",
    ),
    Case(
        "public-11",
        "a preferences POST with action=delete, two actions, or list=abc / list=١",
        "400 saying which action or list is wrong; nothing changes",
    ),
    Case(
        "public-12",
        "multipart/form-data: RFC 8058's own one-click example, then a broken multipart body",
        "the example unsubscribes (200); the broken one is 400 and changes nothing",
    ),
    Case(
        "public-13",
        "PUT and DELETE on an unsubscribe link",
        "405 with a page saying the request kind is not accepted; nothing changes",
    ),
    Case(
        "public-14",
        "a GET of the unsubscribe page with a chunked 10 MB body and an 8 KB Accept-Language",
        "the body is refused (413) unread; the page itself still answers 200 in English",
    ),
]

MEGABYTE = 1024 * 1024


@dataclass
class Site:
    process: Popen[bytes]
    pool: asyncpg.Pool
    signer: Signer
    campaign_id: int
    contacts: list[tuple[int, str]]  # (id, email), one per case
    used: set[int] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.process.http_port)  # type: ignore[attr-defined]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def contact(self, case: int) -> tuple[int, str]:
        assert case not in self.used
        self.used.add(case)
        return self.contacts[case]

    def path(self, contact_id: int, purpose: Purpose = "unsubscribe") -> str:
        token = self.signer.link_token(contact_id, f"c{self.campaign_id}", purpose)
        return f"/{'unsubscribe' if purpose == 'unsubscribe' else 'preferences'}/{token}"

    def rss(self) -> int:
        """The server process's peak resident memory so far (VmHWM), bytes: a body buffered
        and freed again still shows."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    async def unchanged(self, email: str) -> None:
        rows = await self.pool.fetch(
            "SELECT m.status FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
            " WHERE lower(c.email) = lower($1)",
            email,
        )
        assert rows and {r["status"] for r in rows} == {"subscribed"}, email
        assert (
            await self.pool.fetchval("SELECT count(*) FROM suppressions WHERE email = $1", email)
            == 0
        )

    async def post(
        self, path: str, body: bytes, content_type: str | None = "application/x-www-form-urlencoded"
    ) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            return await client.post(path, content=body, headers=headers)


@dataclass
class RawAnswer:
    status: int
    head: str
    body: str
    sent: int  # body bytes the client managed to send


class _RawClient(asyncio.Protocol):
    """Keeps every byte the server sent, also when it resets the connection afterwards
    (asyncio's StreamReader drops its buffer on a reset)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.answered = asyncio.Event()
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.extend(data)
        if b"\r\n\r\n" in self.received:
            self.answered.set()

    def connection_lost(self, exc: Exception | None) -> None:
        for event in (self.closed, self.answered, self.writable):
            event.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def write(self, data: bytes) -> bool:
        await self.writable.wait()
        if self.closed.is_set() or self.transport is None:
            return False
        self.transport.write(data)
        return True


async def raw_request(
    port: int,
    head: str,
    chunks: int = 0,
    chunked: bool = True,
    answer_first: bool = False,
) -> RawAnswer:
    """Send a request head, then up to `chunks` body chunks of 64 KB (chunked transfer
    encoding, or raw bytes of a declared length), stopping as soon as the server answers or
    closes. `answer_first`: give the server the chance to answer before any body is sent."""
    loop = asyncio.get_running_loop()
    _transport, client = await loop.create_connection(_RawClient, "127.0.0.1", port)
    chunk = b"x" * (64 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    sent = 0
    await client.write(head.encode("latin-1"))
    if answer_first:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.answered.wait(), 10)
    for _ in range(chunks):
        if client.answered.is_set() or not await client.write(framed):
            break
        sent += len(chunk)
    if chunked and chunks and not client.answered.is_set():
        await client.write(b"0\r\n\r\n")
    await asyncio.wait_for(client.answered.wait(), 60)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(client.closed.wait(), 10)  # the rest of the page, then close
    if client.transport is not None:
        client.transport.close()
    head_bytes, _, body = bytes(client.received).partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    assert status_line.startswith("HTTP/1.1 "), f"no answer: {bytes(client.received)[:200]!r}"
    return RawAnswer(
        int(status_line.split()[1]),
        head_bytes.decode("latin-1"),
        body.decode("utf-8", "replace"),
        sent,
    )


def said(response: httpx.Response | RawAnswer, status: int, *phrases: str) -> None:
    """The status, an HTML page, and the message a person can act on."""
    code = response.status if isinstance(response, RawAnswer) else response.status_code
    text = response.body if isinstance(response, RawAnswer) else response.text
    assert code == status, (code, text[:500])
    assert "<!DOCTYPE html>" in text and "Traceback" not in text
    for phrase in phrases:
        assert phrase in text, (phrase, text[:800])


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    install = Installation()
    pool = await install.setup()
    try:
        audience = await make_audience(pool, 80, tag="pages")
        campaign_id = await make_campaign(pool, audience)
        rows = await pool.fetch(
            "SELECT id, email FROM contacts WHERE email = ANY($1::text[]) ORDER BY email",
            sorted(audience.eligible)[10:40],  # one contact per address (see make_audience)
        )
        process = install.start_services("subscriptions", log_name="public-pages")
        yield Site(
            process=process,
            pool=pool,
            signer=Signer(install.settings.signing_key.get_secret_value().encode()),
            campaign_id=campaign_id,
            contacts=[(r["id"], r["email"]) for r in rows],
        )
    finally:
        await install.teardown()


# --- the cases ----------------------------------------------------------------------------


def _head(method: str, path: str, port: int, *headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


async def chunked_flood(s: Site) -> None:
    contact, email = s.contact(1)
    before = s.rss()
    head = _head(
        "POST",
        s.path(contact),
        s.port,
        "Content-Type: application/x-www-form-urlencoded",
        "Transfer-Encoding: chunked",
    )
    answer = await raw_request(s.port, head, chunks=100 * MEGABYTE // (64 * 1024))
    grown = s.rss() - before
    sent, peak = answer.sent // 1024, grown // 1024
    print(f"\nchunked 100 MB: {sent} KB sent before the 413, peak RSS +{peak} KB")
    said(answer, 413, "at most 64 KB")
    assert "connection: close" in answer.head.lower()
    assert answer.sent < 100 * MEGABYTE
    assert grown < 20 * MEGABYTE, f"the server grew by {grown // MEGABYTE} MB"
    await s.unchanged(email)


async def declared_flood(s: Site) -> None:
    contact, email = s.contact(2)
    before = s.rss()
    head = _head(
        "POST",
        s.path(contact),
        s.port,
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {400 * MEGABYTE}",
    )
    answer = await raw_request(
        s.port, head, chunks=400 * MEGABYTE // (64 * 1024), chunked=False, answer_first=True
    )
    grown = s.rss() - before
    said(answer, 413, "at most 64 KB")
    assert answer.sent == 0, "answered only after the body came"
    assert grown < 20 * MEGABYTE, f"the server grew by {grown // MEGABYTE} MB"
    await s.unchanged(email)


async def too_many_fields(s: Site) -> None:
    contact, email = s.contact(3)
    body = b"List-Unsubscribe=One-Click&" + b"&".join(b"f%d=1" % n for n in range(1000))
    said(await s.post(s.path(contact), body), 400, "too many fields: at most 1000")
    await s.unchanged(email)


async def not_utf8(s: Site) -> None:
    contact, email = s.contact(4)
    for body in (b"List-Unsubscribe=One-Click&x=\xff\xfe", b"List-Unsubscribe=One-Click&x=%ff"):
        said(await s.post(s.path(contact), body), 400, "not valid UTF-8")
    await s.unchanged(email)


async def not_a_form(s: Site) -> None:
    contact, email = s.contact(5)
    said(await s.post(s.path(contact), b"&&List-Unsubscribe&="), 400, "not correctly encoded")
    await s.unchanged(email)


async def wrong_content_type(s: Site) -> None:
    contact, email = s.contact(6)
    path = s.path(contact)
    json_body = b'{"List-Unsubscribe": "One-Click"}'
    said(await s.post(path, json_body, "application/json"), 415, "multipart/form-data")
    said(await s.post(path, b"List-Unsubscribe=One-Click", "text/plain"), 415, "multipart")
    latin = "application/x-www-form-urlencoded; charset=iso-8859-1"
    said(await s.post(path, b"List-Unsubscribe=One-Click", latin), 415, "UTF-8")
    said(await s.post(path, b"List-Unsubscribe=One-Click", None), 415, "urlencoded")
    await s.unchanged(email)


async def huge_token(s: Site) -> None:
    contact, email = s.contact(7)
    token = s.path(contact).rsplit("/", 1)[1]
    long_token = token + "A" * (10 * 1024 - len(token))
    said(
        await s.post(f"/unsubscribe/{long_token}", b"List-Unsubscribe=One-Click"), 404, "not valid"
    )
    async with httpx.AsyncClient(base_url=s.base, timeout=30) as client:
        said(await client.get(f"/preferences/{long_token}"), 404, "not valid")
    await s.unchanged(email)


async def path_traversal(s: Site) -> None:
    for path in (
        "/unsubscribe/..%2F..%2Fetc%2Fpasswd",
        "/preferences/../../etc/passwd",
        "/unsubscribe/%2e%2e/%2e%2e/etc/passwd",
        "/unsubscribe",
    ):
        answer = await raw_request(s.port, _head("GET", path, s.port), chunks=0)
        said(answer, 404, "not valid")
        assert "root:" not in answer.body


async def someone_elses_token(s: Site) -> None:
    contact, email = s.contact(8)
    other, other_email = s.contact(9)
    _payload, mac = s.path(contact).rsplit("/", 1)[1].split(".")
    forged_payload = base64.urlsafe_b64encode(f"{other}:c{s.campaign_id}:unsubscribe".encode())
    forged = f"{forged_payload.rstrip(b'=').decode()}.{mac}"
    said(await s.post(f"/unsubscribe/{forged}", b"List-Unsubscribe=One-Click"), 404, "not valid")
    manage = s.path(contact, "manage").rsplit("/", 1)[1]
    said(await s.post(f"/unsubscribe/{manage}", b"List-Unsubscribe=One-Click"), 404, "not valid")
    await s.unchanged(email)
    await s.unchanged(other_email)


async def no_one_click_field(s: Site) -> None:
    contact, email = s.contact(10)
    path = s.path(contact)
    said(await s.post(path, b"", None), 400, "List-Unsubscribe=One-Click")
    said(await s.post(path, b"List-Unsubscribe=Yes"), 400, "List-Unsubscribe=One-Click")
    said(await s.post(path, b"One-Click=List-Unsubscribe"), 400, "confirm=yes")
    await s.unchanged(email)


async def bad_preferences(s: Site) -> None:
    contact, email = s.contact(11)
    path = s.path(contact, "manage")
    said(await s.post(path, b"action=delete"), 400, "Save my choices")
    said(await s.post(path, b"action=save&action=everything"), 400, "Save my choices")
    said(await s.post(path, b""), 400, "Save my choices")
    said(await s.post(path, b"action=save&list=abc"), 400, "not a list number")
    said(await s.post(path, "action=save&list=١".encode()), 400, "not a list number")
    await s.unchanged(email)


async def multipart(s: Site) -> None:
    contact, email = s.contact(12)
    boundary = "---FormBoundaryjWmhtjORrn"
    example = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    broken = example.replace(f"--{boundary}--".encode(), b"")
    other, other_email = s.contact(13)
    content_type = f"multipart/form-data; boundary={boundary}"
    said(await s.post(s.path(other), broken, content_type), 400, "not correctly encoded")
    said(await s.post(s.path(other), example, "multipart/form-data"), 400, "not correctly")
    await s.unchanged(other_email)
    done = await s.post(s.path(contact), example, content_type)
    assert done.status_code == 200, done.text[:500]
    statuses = await s.pool.fetch(
        "SELECT m.status FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " WHERE c.id = $1",
        contact,
    )
    assert {r["status"] for r in statuses} == {"unsubscribed"}, email


async def wrong_method(s: Site) -> None:
    contact, email = s.contact(14)
    async with httpx.AsyncClient(base_url=s.base, timeout=30) as client:
        for method in ("PUT", "DELETE"):
            said(await client.request(method, s.path(contact)), 405, "does not accept")
    await s.unchanged(email)


async def get_with_a_body(s: Site) -> None:
    contact, email = s.contact(15)
    before = s.rss()
    head = _head("GET", s.path(contact), s.port, "Transfer-Encoding: chunked")
    answer = await raw_request(s.port, head, chunks=10 * MEGABYTE // (64 * 1024))
    assert answer.status in (200, 413), answer.head
    assert s.rss() - before < 20 * MEGABYTE
    async with httpx.AsyncClient(base_url=s.base, timeout=30) as client:
        page = await client.get(s.path(contact), headers={"accept-language": "zz;q=0.5," * 800})
    assert page.status_code == 200 and 'lang="en"' in page.text
    await s.unchanged(email)


CHECKS: dict[str, Callable[[Site], Awaitable[None]]] = {
    "public-01": chunked_flood,
    "public-02": declared_flood,
    "public-03": too_many_fields,
    "public-04": not_utf8,
    "public-05": not_a_form,
    "public-06": wrong_content_type,
    "public-07": huge_token,
    "public-08": path_traversal,
    "public-09": someone_elses_token,
    "public-10": no_one_click_field,
    "public-11": bad_preferences,
    "public-12": multipart,
    "public-13": wrong_method,
    "public-14": get_with_a_body,
}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_public_page_request(case: Case, site: Site) -> None:
    await CHECKS[case.id](site)
    assert site.process.poll() is None, "the subscriptions process died"
    ops_port = site.process.ops_port  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"http://127.0.0.1:{ops_port}/healthz")).status_code == 200
