"""Domain metrics (Prometheus): what happened to emails and campaigns, which is what an SRE
alerts on. FastStream's broker-side metrics (faststream_*) are served beside them. Units are
in the names; no label carries personal data (no address, no subject)."""

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
DELIVERIES = Counter(
    "mailroom_deliveries_total",
    "Delivery outcomes recorded by the sender, by kind (campaign, autoresponder) and status"
    " (sent, retry, failed).",
    ["kind", "status"],
)
SMTP_SEND_SECONDS = Histogram(
    "mailroom_smtp_send_seconds",
    "Time of one SMTP transaction, by outcome (sent, retry, failed); up to the account's timeout.",
    ["outcome"],
    # up to the longest timeout an account may have (SmtpAccount.timeout_seconds, 3,600 s)
    buckets=(
        *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        *(300, 600, 1800, 3600),
    ),
)
SMTP_REPLIES = Counter(
    "mailroom_smtp_replies_total",
    "SMTP answers to a transaction, by class: 2xx, 4xx, 5xx, or none (the connection failed).",
    ["class"],
)
SMTP_REJECTIONS = Counter(
    "mailroom_smtp_rejections_total",
    "Permanent SMTP failures (5xx at RCPT or DATA) by what their status code is about: address"
    " (a hard bounce: suppressed), policy (5.7.x: the message or sender), other.",
    ["kind"],
)
QUEUE_MESSAGE_AGE_SECONDS = Histogram(
    "mailroom_queue_message_age_seconds",
    "Time from publication to consumption of a broker message, by queue.",
    ["queue"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
DEAD_LETTERS = Counter(
    "mailroom_dead_letters_total", "Messages dead-lettered, by the queue they came from.", ["queue"]
)
AUTORESPONDER_DUE_TO_SENT_SECONDS = Histogram(
    "mailroom_autoresponder_due_to_sent_seconds",
    "Time from an autoresponder email's due time to its acceptance by the SMTP server.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CAMPAIGN_ITEMS = Gauge(
    "mailroom_campaign_items",
    "Items of running campaigns (scheduled, generating, sending, paused), by status.",
    ["status"],
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
DELIVERY_LIMIT_POLICY_APPLIED = Gauge(
    "mailroom_delivery_limit_policy_applied",
    "1 once this process has put the delivery-limit policy on the work queues (RabbitMQ's"
    " management API, MAILROOM_RABBITMQ_MANAGEMENT_URL); 0 while it keeps trying.",
)
SERVICE_UP = Gauge(
    "mailroom_service_up", "1 for each service running in this process.", ["service"]
)
# The job gauges exist from the start of every process running the job (0: not yet), so
# that an idle job is seen as present; alerts compare them (deploy/prometheus).
JOB_LAST_RUN = Gauge(
    "mailroom_job_last_run_timestamp_seconds",
    "When the job last ran in this process (unix seconds; 0: not yet).",
    ["job"],
)
JOB_LAST_SUCCESS = Gauge(
    "mailroom_job_last_success_timestamp_seconds",
    "When a run of the job last succeeded in this process (unix seconds; 0: not yet).",
    ["job"],
)
JOB_LAST_ERROR = Gauge(
    "mailroom_job_last_error_timestamp_seconds",
    "When a run of the job last failed in this process (unix seconds; 0: not yet).",
    ["job"],
)
SEND_RATE_PER_SECOND = Gauge(
    "mailroom_send_rate_per_second",
    "The shared send rate (messages a second) as this sender last saw it, by limiter group;"
    " below the account's messages_per_second while the relay throttles.",
    ["group"],
)
THROTTLE_EVENTS = Counter(
    "mailroom_throttle_events_total",
    "Throttling replies from the SMTP relay (421, 4.7.x, rate-limit texts), by limiter group.",
    ["group"],
)
