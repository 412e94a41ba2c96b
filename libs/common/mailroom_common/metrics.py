"""Domain metrics (Prometheus). FastStream's own consumer metrics are not used: ours say
what happened to emails and campaigns, which is what an SRE alerts on."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_HANDLED = Counter(
    "mailroom_broker_messages_total",
    "Broker messages handled, by queue and outcome (ok, dead_lettered, requeued).",
    ["queue", "outcome"],
)
ITEMS_GENERATED = Counter("mailroom_items_generated_total", "Campaign items created.")
EMAILS_RENDERED = Counter("mailroom_emails_rendered_total", "Emails rendered.", ["kind"])
RENDER_FAILURES = Counter(
    "mailroom_render_failures_total", "Items failed at rendering, by scope.", ["scope"]
)
DELIVERIES = Counter("mailroom_deliveries_total", "SMTP delivery outcomes, by status.", ["status"])
SMTP_SEND_SECONDS = Histogram(
    "mailroom_smtp_send_seconds",
    "Time of one SMTP transaction.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "mailroom_rate_limit_wait_seconds_total", "Time spent waiting for the shared send rate."
)
CAMPAIGNS_COMPLETED = Counter(
    "mailroom_campaigns_finished_total", "Campaigns that reached an end, by status.", ["status"]
)
PERIODIC_FAILURES = Counter(
    "mailroom_periodic_task_failures_total", "Periodic task runs that raised.", ["task"]
)
SERVICE_UP = Gauge(
    "mailroom_service_up", "1 for each service running in this process.", ["service"]
)
JOB_LAST_SUCCESS = Gauge(
    "mailroom_job_last_success_timestamp_seconds",
    "When a run of the job last succeeded in this process (unix seconds).",
    ["job"],
)
