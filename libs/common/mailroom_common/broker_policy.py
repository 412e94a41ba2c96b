"""The delivery limit of the work queues, as a RabbitMQ policy set through the management API.

A queue argument (`x-delivery-limit`) cannot change once the queue exists: declaring it again
with another value fails with PRECONDITION_FAILED, so changing MAILROOM_DELIVERY_LIMIT used to
stop every process at start. A policy can change at any time and applies to the queues at
once. AMQP cannot set policies; the management HTTP API (plugin rabbitmq_management) can.
Every process puts the policy at start (the same PUT, so replicas agree once they run the
same settings) without ever holding its start up (`delivery_limit_keeper`); `mailroom migrate`
puts it too, and fails when it cannot, so a deployment's one explicit step shows a wrong
MAILROOM_RABBITMQ_MANAGEMENT_URL.

RabbitMQ applies one policy per queue, the one of highest priority: a policy of the
operator's own that matches these queues with a higher priority replaces this one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from mailroom_common.broker import Topology
from mailroom_common.settings import Settings

POLICY_PRIORITY = 1
TIMEOUT_SECONDS = 10.0


class BrokerPolicyError(Exception):
    """The management API refused (`status`: its HTTP status) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def lasting(self) -> bool:
        """A refusal that asking again will not change (credentials, permissions, path)."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


async def _in_own_thread(call: Callable[[], bytes]) -> bytes:
    """`call()` in a daemon thread: unlike `asyncio.to_thread`, a cancelled caller leaves
    nothing that the loop's close (or the interpreter's exit) waits for, even when a DNS
    look-up or a server that never answers holds the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()

    def settle(outcome: bytes | BaseException) -> None:
        if future.done():  # the caller was cancelled
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def work() -> None:
        outcome: bytes | BaseException
        try:
            outcome = call()
        except BaseException as error:  # handed to the caller, whatever it is
            outcome = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name="rabbitmq-management", daemon=True).start()
    return await future


@dataclass(frozen=True)
class ManagementApi:
    base_url: str  # http(s)://host:port, no credentials
    username: str
    password: str
    vhost: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ManagementApi:
        try:
            return cls._from_settings(settings)
        except ValueError as error:  # a port that is no number; the URL itself is not repeated
            raise BrokerPolicyError(
                f"MAILROOM_RABBITMQ_MANAGEMENT_URL (or MAILROOM_RABBITMQ_URL) is malformed: {error}"
            ) from None

    @classmethod
    def _from_settings(cls, settings: Settings) -> ManagementApi:
        amqp = urlsplit(settings.rabbitmq_url)
        vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
        username = unquote(amqp.username or "guest")
        password = unquote(amqp.password or "guest")
        if settings.rabbitmq_management_url:
            url = urlsplit(settings.rabbitmq_management_url)
            if url.username:
                username, password = unquote(url.username), unquote(url.password or "")
            netloc = url.hostname or ""
            if url.port:
                netloc = f"{netloc}:{url.port}"
            base = urlunsplit((url.scheme, netloc, url.path.rstrip("/"), "", ""))
        else:
            scheme, port = ("https", 15671) if amqp.scheme == "amqps" else ("http", 15672)
            base = f"{scheme}://{amqp.hostname or '127.0.0.1'}:{port}"
        return cls(base, username, password, vhost)

    def policy_url(self, name: str) -> str:
        return f"{self.base_url}/api/policies/{quote(self.vhost, safe='')}/{quote(name, safe='')}"

    def _call(
        self, method: str, url: str, body: object | None = None, timeout: float = TIMEOUT_SECONDS
    ) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                content: bytes = answer.read()
                return content
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            raise BrokerPolicyError(
                f"RabbitMQ's management API at {self.base_url} answered {error.code} to"
                f" {method} {urlsplit(url).path}: {detail} (MAILROOM_RABBITMQ_MANAGEMENT_URL)",
                error.code,
            ) from None
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
            raise BrokerPolicyError(
                f"cannot reach RabbitMQ's management API at {self.base_url}: {error}"
                " (MAILROOM_RABBITMQ_MANAGEMENT_URL; the broker needs the rabbitmq_management"
                " plugin)"
            ) from None

    async def _ask(
        self, method: str, url: str, body: object | None = None, within: float = TIMEOUT_SECONDS
    ) -> bytes:
        """One call, given up after `within` seconds whatever holds it (DNS included)."""
        try:
            return await asyncio.wait_for(
                _in_own_thread(lambda: self._call(method, url, body, within)), within
            )
        except TimeoutError:
            raise BrokerPolicyError(
                f"RabbitMQ's management API at {self.base_url} did not answer {method}"
                f" {urlsplit(url).path} within {within:g} s (MAILROOM_RABBITMQ_MANAGEMENT_URL)"
            ) from None

    async def put_policy(
        self, name: str, policy: dict[str, object], within: float = TIMEOUT_SECONDS
    ) -> None:
        await self._ask("PUT", self.policy_url(name), policy, within)

    async def get_policy(self, name: str) -> dict[str, object] | None:
        try:
            raw = await self._ask("GET", self.policy_url(name))
        except BrokerPolicyError as error:
            if error.status == 404:
                return None
            raise
        answer: dict[str, object] = json.loads(raw)
        return answer

    async def delete_policy(self, name: str) -> None:
        try:
            await self._ask("DELETE", self.policy_url(name))
        except BrokerPolicyError as error:
            if error.status != 404:
                raise

    async def queue(self, name: str) -> dict[str, object]:
        url = f"{self.base_url}/api/queues/{quote(self.vhost, safe='')}/{quote(name, safe='')}"
        answer: dict[str, object] = json.loads(await self._ask("GET", url))
        return answer


def delivery_limit_policy_name(topology: Topology) -> str:
    return f"{topology.prefix}.delivery-limit"


def delivery_limit_policy(topology: Topology) -> dict[str, object]:
    """The policy: `delivery-limit` on exactly the work queues of this prefix."""
    names = sorted({queue.name for queue, _, _ in topology.bindings()})
    pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    return {
        "pattern": pattern,
        "definition": {"delivery-limit": topology.delivery_limit},
        "apply-to": "queues",
        "priority": POLICY_PRIORITY,
    }


async def apply_delivery_limit(
    settings: Settings, topology: Topology, within: float = TIMEOUT_SECONDS
) -> None:
    """Put the delivery-limit policy of `topology` (idempotent), or raise BrokerPolicyError
    (after `within` seconds at most)."""
    api = ManagementApi.from_settings(settings)
    await api.put_policy(
        delivery_limit_policy_name(topology), delivery_limit_policy(topology), within
    )


async def remove_delivery_limit(settings: Settings, topology: Topology) -> None:
    api = ManagementApi.from_settings(settings)
    await api.delete_policy(delivery_limit_policy_name(topology))
