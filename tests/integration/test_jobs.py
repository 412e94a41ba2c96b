"""The Job Manager (`mailroom jobs`, `mailroom jobs run`) against real service processes: a
stopped service shows as down within 30 s and up again after a restart; a job asked to
run runs now, whatever its interval."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from mailroom_common.jobs import JOBS, LIVE_SECONDS

from tests.support.cli import run_mailroom
from tests.support.environment import Installation, wait_for

pytestmark = pytest.mark.integration

COMPLETION_JOB = "mark-campaigns-completed"


async def jobs_by_name(install: Installation) -> dict[str, dict[str, Any]]:
    result = await run_mailroom(install.env, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    overview = json.loads(result.stdout)
    assert overview["broker_problem"] is None
    return {job["job"]: job for job in overview["jobs"]}


async def wait_for_state(install: Installation, job: str, state: str, limit: float) -> float:
    """Seconds until `job` shows `state` in `mailroom jobs --json`."""
    started = time.monotonic()

    async def there() -> bool:
        shown: str = (await jobs_by_name(install))[job]["state"]
        return shown == state

    await wait_for(there, limit, f"{job} to be {state}", interval=0.5)
    return time.monotonic() - started


async def test_a_stopped_service_is_down_within_30_s_and_up_after_it_restarts(
    installation: Installation,
) -> None:
    jobs = await jobs_by_name(installation)
    assert [j["job"] for j in jobs.values()] == [job.name for job in JOBS]
    assert all(j["state"] == "down" and j["replicas"] == 0 for j in jobs.values())

    process = installation.start_services("completion", log_name="completion")
    await wait_for_state(installation, COMPLETION_JOB, "up", 30)

    async def succeeded_once() -> bool:
        # the first heartbeat goes at start, possibly while the first sweep still runs
        return (await jobs_by_name(installation))[COMPLETION_JOB]["last_success"] is not None

    await wait_for(succeeded_once, 15, "the first sweep's success to be recorded", interval=0.5)
    job = (await jobs_by_name(installation))[COMPLETION_JOB]
    assert job["service"] == "completion" and job["title"] == "Mark campaigns as completed"
    assert job["replicas"] == 1 and len(job["instances"]) == 1
    assert job["last_run"] is not None and job["last_success"] is not None
    assert job["last_error"] is None
    [queue] = job["queues"]
    assert queue["queue"] == f"{installation.settings.queue_prefix}.completion.events"
    assert (queue["messages"], queue["consumers"], queue["dead_letters"]) == (0, 1, 0)
    assert (job["queue_depth"], job["consumers"], job["dead_letters"]) == (0, 1, 0)
    # the other jobs' services do not run
    assert jobs["generate-campaign-items"]["state"] == "down"

    # SIGTERM: the last heartbeat says it stopped
    installation.terminate(process)
    assert await wait_for_state(installation, COMPLETION_JOB, "down", LIVE_SECONDS) <= LIVE_SECONDS
    job = (await jobs_by_name(installation))[COMPLETION_JOB]
    assert job["replicas"] == 0 and job["consumers"] == 0
    assert job["last_success"] is not None  # its history stays

    # up again after a restart; then killed (no last heartbeat): down within 30 s
    process = installation.start_services("completion", log_name="completion")
    await wait_for_state(installation, COMPLETION_JOB, "up", 30)
    installation.kill(process)
    assert await wait_for_state(installation, COMPLETION_JOB, "down", LIVE_SECONDS + 5) <= (
        LIVE_SECONDS + 1
    )


async def test_jobs_run_makes_an_idle_job_run_now() -> None:
    # the completion sweep runs once at start, then once an hour
    install = Installation(sweep_interval_seconds=3600)
    await install.setup()
    try:
        install.start_services("completion", "message_processor", log_name="services")
        await wait_for_state(install, COMPLETION_JOB, "up", 30)
        before = (await jobs_by_name(install))[COMPLETION_JOB]["last_run"]
        assert before is not None

        result = await run_mailroom(install.env, "jobs", "run", COMPLETION_JOB)
        assert result.returncode == 0, result.stderr
        assert "1 replica(s) of mark-campaigns-completed" in " ".join(result.stdout.split())

        async def ran_again() -> bool:
            last_run = (await jobs_by_name(install))[COMPLETION_JOB]["last_run"]
            return datetime.fromisoformat(last_run) > datetime.fromisoformat(before)

        # the heartbeat (every 10 s) brings the new run to the table
        await wait_for(ran_again, 25, "the sweep to run again", interval=1)

        # a job whose work only arrives as messages has nothing to run; one that is down
        # has nobody to hear it; an unknown job is a usage error
        result = await run_mailroom(install.env, "jobs", "run", "process-campaign-messages")
        assert result.returncode == 1 and "has no sweep" in result.stderr, result.stderr
        result = await run_mailroom(install.env, "jobs", "run", "generate-campaign-items")
        assert result.returncode == 1 and "is down" in result.stderr, result.stderr
        result = await run_mailroom(install.env, "jobs", "run", "no-such-job")
        assert result.returncode == 2 and "no job 'no-such-job'" in result.stderr

        # the processor is alive with nothing to do: idle, not down
        jobs = await jobs_by_name(install)
        assert jobs["process-campaign-messages"]["state"] == "idle"
        assert jobs["process-campaign-messages"]["replicas"] == 1
        assert jobs["process-campaign-messages"]["last_run"] is None
        assert jobs["process-campaign-messages"]["runnable"] is False

        # the table an operator reads
        result = await run_mailroom(install.env, "jobs")
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stdout.splitlines() if line.count("│") > 2]
        rows = {line.split("│")[1].strip(): line for line in lines}
        assert "up" in rows[COMPLETION_JOB] and "s ago" in rows[COMPLETION_JOB]
        assert "down" in rows["process-bounce-email"]
    finally:
        await install.teardown()
