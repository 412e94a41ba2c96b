"""Signing in to the administrator's console over plain HTTP (httpx), for the console tests."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, name: str = "Ann Admin") -> str:
    """Sign `client` in (its cookie jar keeps the session); the session's CSRF token."""
    form = await client.get("/console/sign-in")
    answer = await client.post(
        "/console/sign-in",
        data={"csrf_token": csrf_of(form.text), "name": name, "token": token},
    )
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/smtp")
    assert page.status_code == 200
    return csrf_of(page.text)
