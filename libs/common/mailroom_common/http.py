"""/healthz, /readyz and /metrics for every process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

ReadinessProbe = Callable[[], Awaitable[dict[str, str | None]]]


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
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "services": services})

    async def readyz(_: Request) -> Response:
        problems = {k: v for k, v in (await readiness()).items() if v}
        status = 200 if not problems else 503
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )
