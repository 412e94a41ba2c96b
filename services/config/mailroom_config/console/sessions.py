"""Console sessions: signed cookies naming a session kept in PostgreSQL, CSRF tokens bound to
the session, and failed sign-ins slowed down.

The cookie holds `<secret>.<mac>`: a random secret and its HMAC under a key derived from
MAILROOM_SIGNING_KEY (a forged or altered cookie is refused without a query). The database
holds only the secret's SHA-256 digest, with who signed in and when the session ends: it
ends after MAILROOM_CONSOLE_SESSION_MINUTES unused, 12 hours after sign-in at the latest, or
at sign-out, on every replica at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from asyncpg.pool import Pool

MAX_LIFETIME = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # how often a used session's last use is written
FAILURE_DELAY_SECONDS = 1.0
MAX_FAILURES = 10  # per client address and window, then 429 until the window has passed
FAILURE_WINDOW_SECONDS = 600.0


def _key(signing_key: str, purpose: str) -> bytes:
    return hmac.new(signing_key.encode(), f"mailroom console {purpose}".encode(), "sha256").digest()


@dataclass(frozen=True)
class Session:
    actor: str
    csrf: str  # the token every form of this session carries


class Sessions:
    def __init__(self, pool: Pool, signing_key: str, idle_minutes: int) -> None:
        self.pool = pool
        self.cookie_key = _key(signing_key, "session")
        self.csrf_key = _key(signing_key, "csrf")
        self.idle = timedelta(minutes=idle_minutes)

    def _mac(self, secret: str) -> str:
        return hmac.new(self.cookie_key, secret.encode(), "sha256").hexdigest()

    def csrf_for(self, secret: str) -> str:
        return hmac.new(self.csrf_key, secret.encode(), "sha256").hexdigest()

    def _secret_of(self, cookie: str | None) -> str | None:
        """The secret of a well-formed cookie carrying our signature, else None."""
        if not cookie or len(cookie) > 200:
            return None
        secret, _, mac = cookie.partition(".")
        if not secret or not hmac.compare_digest(mac.encode(), self._mac(secret).encode()):
            return None
        return secret

    async def create(self, actor: str) -> str:
        """A new session for `actor`; the cookie value to set."""
        secret = secrets.token_urlsafe(32)
        await self.pool.execute("DELETE FROM console_sessions WHERE expires_at < now()")
        await self.pool.execute(
            "INSERT INTO console_sessions (digest, actor, expires_at)"
            " VALUES ($1, $2, now() + $3::interval)",
            hashlib.sha256(secret.encode()).digest(),
            actor,
            min(self.idle, MAX_LIFETIME),
        )
        return f"{secret}.{self._mac(secret)}"

    async def find(self, cookie: str | None) -> Session | None:
        """The live session of a cookie (its end moved on by its use), else None."""
        secret = self._secret_of(cookie)
        if secret is None:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        row = await self.pool.fetchrow(
            "SELECT actor, last_seen_at < now() - $2::interval AS stale FROM console_sessions"
            " WHERE digest = $1 AND expires_at > now()",
            digest,
            TOUCH_EVERY,
        )
        if row is None:
            return None
        if row["stale"]:
            await self.pool.execute(
                "UPDATE console_sessions SET last_seen_at = now(),"
                " expires_at = least(now() + $2::interval, created_at + $3::interval)"
                " WHERE digest = $1",
                digest,
                self.idle,
                MAX_LIFETIME,
            )
        return Session(actor=row["actor"], csrf=self.csrf_for(secret))

    async def end(self, cookie: str | None) -> None:
        secret = self._secret_of(cookie)
        if secret is not None:
            await self.pool.execute(
                "DELETE FROM console_sessions WHERE digest = $1",
                hashlib.sha256(secret.encode()).digest(),
            )


def same_token(presented: str | None, expected: str) -> bool:
    return hmac.compare_digest((presented or "").encode(), expected.encode())


def token_matches(presented: str, expected_digest: bytes | None) -> bool:
    """The admin token, compared in constant time (equal-length digests: no length leaks)."""
    if expected_digest is None:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), expected_digest)


class SignInThrottle:
    """Failed sign-ins are answered after FAILURE_DELAY_SECONDS, one at a time per process
    (so guesses go at most one a second), and a client address with MAX_FAILURES failures in
    FAILURE_WINDOW_SECONDS is refused outright until the window has passed."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.failures: dict[str, list[float]] = {}

    def refused(self, client: str) -> float | None:
        """Seconds to wait before trying again, or None: the client may try."""
        now = time.monotonic()
        recent = [t for t in self.failures.get(client, []) if t > now - FAILURE_WINDOW_SECONDS]
        if recent:
            self.failures[client] = recent
        else:
            self.failures.pop(client, None)
        if len(recent) < MAX_FAILURES:
            return None
        return recent[0] + FAILURE_WINDOW_SECONDS - now

    async def failed(self, client: str) -> None:
        self.failures.setdefault(client, []).append(time.monotonic())
        if len(self.failures) > 10_000:  # a flood of addresses: forget the oldest
            for old in list(self.failures)[:5_000]:
                del self.failures[old]
        async with self.lock:
            await asyncio.sleep(FAILURE_DELAY_SECONDS)

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)
