"""The one outbound HTTP request of the webhooks: an SNS signing certificate or a
SubscribeURL, only ever for URLs sns.is_sns_url accepted (tests inject their own fetch)."""

from __future__ import annotations

import httpx

MAX_RESPONSE_BYTES = 64 * 1024
TIMEOUT_SECONDS = 10.0


async def https_get(url: str) -> bytes:
    """The body of a 200 answer (certificates verified, no redirects, at most 64 KB)."""
    async with (
        httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ValueError(f"answer over {MAX_RESPONSE_BYTES} bytes")
        return bytes(body)
