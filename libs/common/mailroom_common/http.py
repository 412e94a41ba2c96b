"""/healthz, /readyz and /metrics for every process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessProbe = Callable[[], Awaitable[dict[str, str | None]]]


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
