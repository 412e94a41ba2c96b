-- The Job Manager: every live process writes one row per job it runs, about every 10 s
-- (mailroom_common.jobs); a job none of whose instances was seen for 30 s is down. A process
-- that stops (SIGTERM) says so at once: its last heartbeat sets stopped_at.
CREATE TABLE job_heartbeats (
    job text NOT NULL,
    instance text NOT NULL,            -- host:pid of the process
    service text NOT NULL,
    last_seen timestamptz NOT NULL,    -- the database's clock at the last heartbeat
    last_run timestamptz,              -- when the job last started a run (a poll, a message)
    last_success timestamptz,          -- when a run last ended without an error
    last_error text,
    last_error_at timestamptz,
    stopped_at timestamptz,            -- set by the last heartbeat of a process that stopped
    PRIMARY KEY (job, instance)
);
