"""The Job Manager in the admin API: the jobs (the same JSON as `mailroom jobs --json`)
and asking one to run now (as `mailroom jobs run NAME`).

    GET  /admin/jobs               every job: replicas, runs, errors, queues, dead letters
    POST /admin/jobs/{name}/run    job.run for that job: every replica of it runs it now
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.params import Depends
from mailroom_common.events import JobRun
from mailroom_common.job_overview import (
    JobRunRefused,
    JobRunRequest,
    JobsOverview,
    read_overview,
    run_request,
)
from mailroom_common.jobs import JOBS
from mailroom_common.runtime import Runtime
from pydantic import BaseModel

log = logging.getLogger(__name__)


class Problem(BaseModel):
    detail: str


JobPath = Annotated[
    str,
    Path(
        description="The job, e.g. mark-campaigns-completed.",
        json_schema_extra={"enum": [job.name for job in JOBS]},
    ),
]


def jobs_router(
    current: Callable[[], Runtime],
    dependencies: Sequence[Depends],
    problems: dict[int | str, dict[str, Any]],
) -> APIRouter:
    router = APIRouter(prefix="/admin/jobs", dependencies=list(dependencies))

    @router.get(
        "",
        response_model=JobsOverview,
        responses=problems,
        summary="The jobs: replicas, last run, last success, queues",
    )
    async def jobs() -> JobsOverview:
        runtime = current()
        try:
            connection = await runtime.broker.connect()
        except Exception as error:
            log.warning("the job overview cannot read the queues: %r", error)
            connection = None
        return await read_overview(runtime.pool, runtime.topology, connection)

    @router.post(
        "/{name}/run",
        response_model=JobRunRequest,
        responses={
            **problems,
            404: {"model": Problem, "description": "Unknown job."},
            409: {
                "model": Problem,
                "description": "The job has nothing to run on demand, or no live replica.",
            },
        },
        summary="Run a job now (job.run, heard by every replica of it)",
    )
    async def run(name: JobPath) -> JobRunRequest:
        runtime = current()
        try:
            request = await run_request(runtime.pool, name)
        except JobRunRefused as refused:
            raise HTTPException(404 if refused.unknown else 409, str(refused)) from None
        await runtime.announce(JobRun(job=name))
        log.info("job.run published for %s (%d replicas)", name, request.replicas)
        return request

    return router
