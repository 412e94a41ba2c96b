"""Bad input against the config service's admin API, on the real service process.

Every bad request gets a 4xx naming what is wrong (the field, for a setting), nothing is
stored, no password ever comes back, and the service stays healthy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from mailroom_config.api import MAX_BODY_BYTES

from tests.catalogue.cases import Case, case_ids
from tests.support.environment import Installation

pytestmark = pytest.mark.integration

TOKEN = "catalogue-admin-token-7d1e2b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMTP_PASSWORD = "Pa55-catalogue-3f9a0c"
MB = 1024 * 1024


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str
    status: int
    json_body: Any = None
    content: bytes | None = None
    chunked: bool = False  # raw HTTP: a chunked body in 64 KB chunks past the limit, never ended
    declared: int = 0  # raw HTTP: this Content-Length declared, no body sent
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))
    field_name: str | None = None  # the field a 422 must name
    says: str = ""  # what the answer's text must contain


CASES: list[Case] = [
    Case("admin-api-01", "smtp from_email with CR/LF and a Bcc header", "422 naming from_email"),
    Case("admin-api-02", "smtp from_name with CR/LF and a Bcc header", "422 naming from_name"),
    Case("admin-api-03", "smtp from_email that is no address", "422 naming from_email"),
    Case("admin-api-04", "a 20 MB body declared by Content-Length", "413 before reading it"),
    Case("admin-api-05", "a 300-character from_name (under the body limit)", "422, at most 200"),
    Case("admin-api-06", "timeout_seconds: Infinity", "422 naming timeout_seconds"),
    Case("admin-api-07", "timeout_seconds: NaN", "422 naming timeout_seconds"),
    Case("admin-api-08", "timeout_seconds: -1", "422 naming timeout_seconds"),
    Case("admin-api-09", "an unknown field", "422: unknown setting, named"),
    Case("admin-api-10", "another group's field (folder in smtp)", "422: unknown setting"),
    Case("admin-api-11", "a wrong bearer token", "401, nothing read"),
    Case("admin-api-12", "no token at all", "401"),
    Case(
        "admin-api-13",
        "a chunked body (no Content-Length) that goes on past 1 MB",
        "413 once 1 MB is read, without waiting for (or buffering) the rest",
    ),
    Case("admin-api-14", "a body that is not JSON", "422: not valid JSON"),
    Case("admin-api-15", "JSON nested 100,000 deep", "422: not valid JSON (no 500)"),
    Case("admin-api-16", "invalid UTF-8 in the body", "422: not valid JSON"),
    Case("admin-api-17", "a NUL byte in the text footer", "422 naming text_footer"),
    Case("admin-api-18", "a host name with a space and one of 300 characters", "422 naming host"),
    Case("admin-api-19", "port 70000 in the bounce mailbox", "422 naming port"),
    Case("admin-api-20", "an actor header with control characters", "422 naming the header"),
    Case("admin-api-21", "a body that is a JSON list, not an object", "422 (body)"),
    Case("admin-api-22", "the password in any answer (GET, PUT, a refused PUT)", "never"),
]

ATTEMPTS: dict[str, Attempt] = {
    "admin-api-01": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"from_email": "news@shop.example\r\nBcc: victim@example.com"},
        field_name="from_email",
        says="line breaks",
    ),
    "admin-api-02": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"from_name": "Shop\r\nBcc: victim@example.com"},
        field_name="from_name",
        says="line breaks",
    ),
    "admin-api-03": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"from_email": "not an address"},
        field_name="from_email",
        says="not a valid email address",
    ),
    "admin-api-04": Attempt("PUT", "/settings/smtp", 413, declared=20 * MB, says="larger than"),
    "admin-api-05": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"from_name": "x" * 300},
        field_name="from_name",
        says="at most 200",
    ),
    "admin-api-06": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        content=b'{"timeout_seconds": Infinity}',
        field_name="timeout_seconds",
        says="finite",
    ),
    "admin-api-07": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        content=b'{"timeout_seconds": NaN}',
        field_name="timeout_seconds",
        says="finite",
    ),
    "admin-api-08": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"timeout_seconds": -1},
        field_name="timeout_seconds",
        says="greater than 0",
    ),
    "admin-api-09": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"colour": "red"},
        field_name="colour",
        says="unknown setting",
    ),
    "admin-api-10": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"folder": "INBOX"},
        field_name="folder",
        says="unknown setting",
    ),
    "admin-api-11": Attempt(
        "PUT",
        "/settings/smtp",
        401,
        {"port": 2525},
        headers={"Authorization": "Bearer not-the-token"},
        says="bearer token",
    ),
    "admin-api-12": Attempt("PUT", "/settings/smtp", 401, {"port": 2525}, headers={}),
    "admin-api-13": Attempt("PUT", "/settings/smtp", 413, chunked=True, says="larger than"),
    "admin-api-14": Attempt(
        "PUT", "/settings/smtp", 422, content=b"not json{", field_name="(body)", says="JSON"
    ),
    "admin-api-15": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        content=b"[" * 100_000 + b"]" * 100_000,
        field_name="(body)",
        says="JSON",
    ),
    "admin-api-16": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        content=b'{"from_name": "\xff\xfe"}',
        field_name="(body)",
        says="JSON",
    ),
    "admin-api-17": Attempt(
        "PUT",
        "/settings/marketing",
        422,
        {"text_footer": "Bye \x00 {{ unsubscribe_url }}"},
        field_name="text_footer",
        says="control characters",
    ),
    "admin-api-18": Attempt(
        "PUT",
        "/settings/bounce",
        422,
        {"host": "imap example.com"},
        field_name="host",
        says="host name",
    ),
    "admin-api-19": Attempt(
        "PUT",
        "/settings/bounce",
        422,
        {"port": 70000},
        field_name="port",
        says="less than or equal to 65535",
    ),
    "admin-api-20": Attempt(
        "PUT",
        "/settings/smtp",
        422,
        {"port": 2525},
        headers={**AUTH, "X-Mailroom-Actor": "eve\x1b[31m"},
        field_name="X-Mailroom-Actor",
        says="printable",
    ),
    "admin-api-21": Attempt(
        "PUT", "/settings/smtp", 422, [1, 2], field_name="(body)", says="JSON object"
    ),
}


@pytest.fixture(scope="module")
async def config() -> AsyncIterator[tuple[Installation, str]]:
    install = Installation(admin_token=TOKEN)
    await install.setup()
    try:
        process = install.start_services("config", log_name="config")
        base = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as client:
            answer = await client.put("/settings/smtp", json={"password": SMTP_PASSWORD})
            assert answer.status_code == 200, answer.text
        yield install, base
    finally:
        await install.teardown()


async def _raw(base: str, attempt: Attempt) -> httpx.Response:
    """A request written by hand: a body that is declared and never sent, or chunks that go
    on; the answer must come while the client still has more to send."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{attempt.method} {attempt.path} HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{name}: {value}" for name, value in attempt.headers.items()]
    head.append("Content-Type: application/json")
    if attempt.declared:
        head.append(f"Content-Length: {attempt.declared}")
    else:
        head.append("Transfer-Encoding: chunked")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    # the chunks stop one byte past the server's limit (the last one cut short): by the time
    # the server knows the body is too large it has read every byte sent, so its close is a
    # FIN after the 413, not a reset that could throw the answer away before it is read
    remaining = MAX_BODY_BYTES + 1 if attempt.chunked else 0
    while remaining > 0:
        chunk = b"x" * min(64 * 1024, remaining)
        remaining -= len(chunk)
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    data = await asyncio.wait_for(reader.read(), 60)  # the server answers, then closes
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return httpx.Response(int(status_line.split()[1]), content=body)


async def _send(client: httpx.AsyncClient, attempt: Attempt) -> httpx.Response:
    headers = dict(attempt.headers)
    if attempt.chunked or attempt.declared:
        return await _raw(str(client.base_url).rstrip("/"), attempt)
    if attempt.content is not None:
        headers.setdefault("Content-Type", "application/json")
        return await client.request(
            attempt.method, attempt.path, content=attempt.content, headers=headers
        )
    return await client.request(
        attempt.method, attempt.path, json=attempt.json_body, headers=headers
    )


async def _versions(client: httpx.AsyncClient) -> dict[str, int]:
    answer = await client.get("/settings", headers=AUTH)
    assert answer.status_code == 200
    return {group: view["version"] for group, view in answer.json().items()}


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_admin_api(config: tuple[Installation, str], case: Case) -> None:
    install, base = config
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        if case.id == "admin-api-22":
            await _password_never_answered(client)
            return
        attempt = ATTEMPTS[case.id]
        before = await _versions(client)
        answer = await _send(client, attempt)
        assert answer.status_code == attempt.status, (case.attack, answer.text[:500])
        assert SMTP_PASSWORD not in answer.text
        if attempt.field_name is not None:
            problems = answer.json()["detail"]
            named = [p for p in problems if p["field"] == attempt.field_name]
            assert named, problems
            assert attempt.says in named[0]["problem"], problems
        elif attempt.says:
            assert attempt.says in answer.json()["detail"]
        assert await _versions(client) == before  # nothing stored
        ops_port = install.processes[0].ops_port  # type: ignore[attr-defined]
        health = await client.get(f"http://127.0.0.1:{ops_port}/healthz")
        assert health.status_code == 200


async def _password_never_answered(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("/settings", headers=AUTH),
        await client.get("/settings/smtp", headers=AUTH),
        await client.put("/settings/smtp", json={"port": 2526}, headers=AUTH),
        await client.put(
            "/settings/smtp", json={"password": SMTP_PASSWORD, "port": 0}, headers=AUTH
        ),
        await client.get("/settings/smtp/history", headers=AUTH),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 422, 200]
    for answer in answers:
        assert SMTP_PASSWORD not in answer.text
    assert answers[1].json()["settings"]["password"] == "********"
