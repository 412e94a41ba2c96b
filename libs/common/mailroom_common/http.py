"""The ops port of every process (/healthz, /readyz, /readyz/SERVICE, /metrics), and the
dispatcher of the public port's pages among the services of a process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


@dataclass(frozen=True)
class Readiness:
    """What /readyz answers: the process and each of its services, with what is wrong."""

    ready: bool
    problems: dict[str, str]  # everything wrong, failing the process or not
    services: dict[str, dict[str, object]]  # name -> {"ready": bool, "problems": {...}}

    @classmethod
    def of(
        cls, shared: Mapping[str, str | None], own: Mapping[str, Mapping[str, str | None]]
    ) -> Readiness:
        """`shared`: what every service needs (database, broker); `own`: each service's own
        checks. A service is ready when both are fine; the process when it runs at least
        one ready service (one service's own trouble does not stop the others)."""
        common = {name: problem for name, problem in shared.items() if problem}
        services: dict[str, dict[str, object]] = {}
        problems = dict(common)
        for service, checks in own.items():
            failing = {name: problem for name, problem in checks.items() if problem}
            problems.update(failing)
            services[service] = {"ready": not common and not failing, "problems": failing}
        ready = not common and (not services or any(s["ready"] for s in services.values()))
        return cls(ready, problems, services)

    def as_json(self) -> dict[str, object]:
        return {"ready": self.ready, "problems": self.problems, "services": self.services}


ReadinessProbe = Callable[[], Awaitable[Readiness]]


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The public port's answer outside every service's pages."""
    await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)


class PathDispatcher:
    """Sends each request to the service app owning its path prefix, else to `default`.

    Several services of one process (e.g. `run all`) share one port: each owns its paths."""

    def __init__(self, default: ASGIApp, owned: list[tuple[tuple[str, ...], ASGIApp]]) -> None:
        self.default = default
        self.owned = owned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        for prefixes, app in self.owned:
            if any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes):
                await app(scope, receive, send)
                return
        await self.default(scope, receive, send)


def health_app(services: list[str], readiness: ReadinessProbe) -> Starlette:
    """The ops port: /healthz answers while the process runs (no I/O); /readyz is 503 while
    the process should take no traffic; /readyz/SERVICE for one service; /metrics."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "services": services})

    async def readyz(_: Request) -> Response:
        answer = await readiness()
        return JSONResponse(answer.as_json(), status_code=200 if answer.ready else 503)

    async def service_readyz(request: Request) -> Response:
        name = request.path_params["service"]
        if name not in services:
            return JSONResponse({"detail": f"this process does not run {name}"}, 404)
        answer = (await readiness()).services[name]
        return JSONResponse(answer, status_code=200 if answer["ready"] else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/readyz/{service}", service_readyz),
            Route("/metrics", metrics),
        ]
    )


PEER = "mailroom.peer"  # the scope key of the connection's own (host, port)


def keep_peer(app: ASGIApp, forwarded_allow_ips: str) -> ASGIApp:
    """`app` behind uvicorn's X-Forwarded-For handling (scope["client"]: the browser a
    trusted proxy names), with the connection's own address kept in scope[PEER] first: a
    check of which proxy sent a request needs that one, which uvicorn's own handling loses."""
    # uvicorn types its middleware with its own ASGI types, which starlette's are not
    forwarded = cast(ASGIApp, ProxyHeadersMiddleware(app, trusted_hosts=forwarded_allow_ips))  # type: ignore[arg-type]

    async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER] = scope.get("client")
        await forwarded(scope, receive, send)

    return with_peer
