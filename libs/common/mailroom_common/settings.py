"""Deployment settings, read from the environment (prefix MAILROOM_).

Runtime settings that an administrator changes (SMTP account, footers, bounce mailbox)
live in PostgreSQL instead: see `runtime_settings`.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

DEVELOPMENT_SIGNING_KEY = "mailroom-development-signing-key-change-me"
DEVELOPMENT_SETTINGS_KEY = "mailroom-development-settings-key-change-me"
DEVELOPMENT_KEYS = frozenset({DEVELOPMENT_SIGNING_KEY, DEVELOPMENT_SETTINGS_KEY})
MIN_KEY_LENGTH = 32
GENERATE_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
# the keys checked against the deployment mode: field -> its environment variable
KEYS = {"signing_key": "MAILROOM_SIGNING_KEY", "settings_key": "MAILROOM_SETTINGS_KEY"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore")

    environment: Literal["production", "development"] = Field(
        default="production",
        description="Deployment mode. Outside development every process refuses to start"
        " without a signing key and a settings key of its own (never the public development"
        " keys, at least 32 characters); in development those are used with a loud warning.",
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/mailroom"
    database_pool_size: int = Field(default=10, ge=2, le=200)
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue_prefix: str = Field(
        default="mailroom",
        pattern=r"^[a-z][a-z0-9_-]{0,40}$",
        description="Prefix of every exchange and queue; lets several installs share a broker.",
    )

    batch_size: int = Field(default=100, ge=1, le=5000, description="Emails per outbound batch.")
    items_page_size: int = Field(
        default=1000, ge=1, le=100_000, description="Campaign items created per page."
    )
    activity_events: bool = Field(
        default=True,
        description=(
            "Publish contact.activity (per-contact activity for the CRM's timeline, batched)."
            " Off: nothing is looked up or published for it."
        ),
    )
    delivery_limit: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Deliveries of one broker message before it is dead-lettered.",
    )
    retry_delays_seconds: list[float] = Field(
        default=[30, 120, 600, 1800, 3600],
        description="Back-off tiers of temporary SMTP failures; after the last, the item fails.",
    )
    sweep_interval_seconds: float = Field(default=10.0, gt=0)
    generation_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        allow_inf_nan=False,
        description="The item generator's lease on a campaign, renewed with every page: how"
        " long a generator that crashed keeps other replicas from taking the campaign over.",
    )
    generation_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="How often the item generator looks for due campaigns (a launch wakes it"
        " at once).",
    )
    republish_after_seconds: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="Age of an item page still unpublished (publication lost) before the"
        " item generator's sweep publishes it again.",
    )
    republish_pages: int = Field(
        default=100, ge=1, le=100_000, description="Item pages published again per sweep."
    )
    settings_recheck_seconds: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="How often the outbound sender reads the SMTP account's version, in case"
        " a settings.changed event was missed.",
    )
    prefetch: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Broker messages a consumer holds and handles at once, unless its service"
        " sets its own (the message processor: 2 pages).",
    )
    chunk_per_connection: int = Field(
        default=4,
        ge=1,
        le=10_000,
        description="Emails per SMTP connection that the outbound sender claims, sends and"
        " records together; a pause or cancel stops a batch at its next chunk.",
    )
    archive_after_days: int = Field(
        default=30,
        ge=0,
        le=36500,
        description="Days after a campaign ends (completed, cancelled, failed) before the"
        " completion service moves its items to archived_items; 0: never (archive by hand with"
        " `mailroom campaign archive ID`).",
    )
    archive_chunk_items: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="Items archived per transaction.",
    )
    breaker_hard_bounce_percent: float = Field(
        default=5.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="The completion service pauses a campaign whose hard bounces (at send time"
        " or by bounce message) pass this share of its attempts since launch or resume.",
    )
    breaker_complaint_percent: float = Field(
        default=0.1,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="... or whose complaints pass this share of its attempts.",
    )
    breaker_min_attempts: int = Field(
        default=500,
        ge=1,
        le=100_000_000,
        description="Attempts (final SMTP answers) a campaign makes since launch or resume"
        " before its bounce and complaint rates are judged.",
    )
    breaker_account_failure_seconds: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="A campaign whose every send the SMTP account has refused (authentication,"
        " TLS) for this long is paused.",
    )

    signing_key: SecretStr = SecretStr(DEVELOPMENT_SIGNING_KEY)
    settings_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_SETTINGS_KEY),
        description="Encrypts the SMTP and IMAP passwords stored in the database.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the config service's admin API."
    )
    console_session_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        description="The administrator's console: a session unused this long ends (and any"
        " session ends 12 hours after sign-in).",
    )
    console_trusted_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,100}$",
        description="The console also signs in whoever this request header names (e.g."
        " X-Forwarded-User, X-Auth-Request-Email: an OIDC proxy in front), when the request"
        " comes from MAILROOM_CONSOLE_TRUSTED_PROXIES. Unset: the admin token only.",
    )
    console_trusted_proxies: list[str] = Field(
        default=["127.0.0.1/32", "::1/128"],
        description="Addresses (CIDR) of the proxies whose MAILROOM_CONSOLE_TRUSTED_HEADER is"
        " believed.",
    )
    config_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where `mailroom settings ...` finds the config service's admin API.",
    )
    signing_key_previous: SecretStr | None = None
    bounce_domain: str = "bounces.mailroom.test"
    bounce_domains: list[str] = Field(
        default=[],
        description="More domains of the VERP return path (a JSON list), each with an MX that"
        " reaches the bounce mailbox: a message's return path uses the first of"
        " MAILROOM_BOUNCE_DOMAIN and these aligned with its From domain, else"
        " MAILROOM_BOUNCE_DOMAIN.",
    )
    message_id_domain: str = "mailroom.test"

    http_host: str = "0.0.0.0"
    http_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="The public pages (subscriptions pages, the config admin API); opened only"
        " by a process that runs one of those services. 0: a free port.",
    )
    ops_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="/healthz, /readyz and /metrics of every process. 0: a free port.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line; text: for a terminal."
    )
    migrate_on_start: bool = Field(
        default=False,
        description="Apply pending migrations when a service starts (otherwise run"
        " `mailroom migrate`; a service refuses to start on an older schema).",
    )
    rabbitmq_management_url: str | None = Field(
        default=None,
        description="RabbitMQ's management HTTP API, which sets the delivery-limit policy"
        " (MAILROOM_DELIVERY_LIMIT); default: the host and credentials of MAILROOM_RABBITMQ_URL"
        " on port 15672. `mailroom migrate` fails when it cannot put the policy; a service"
        " starts all the same and keeps trying (gauge mailroom_delivery_limit_policy_applied).",
    )
    graceful_timeout_seconds: float = Field(default=30.0, gt=0)
    broker_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="How long a command of the CLI waits for the broker to take its"
        " connection or confirm a publish before it gives up, naming MAILROOM_RABBITMQ_URL"
        " (and how long `mailroom migrate` waits for the management API).",
    )

    @field_validator("console_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]
        except ValueError as error:
            raise ValueError(
                f"each entry must be an IP address or network (CIDR): {error}"
            ) from None

    @model_validator(mode="after")
    def _keys_fit_the_environment(self) -> Settings:
        problems = self.key_problems()
        if problems and self.environment != "development":
            raise ValueError(
                "refusing to start: "
                + "; ".join(problems)
                + f". Generate a key with: {GENERATE_KEY} (or, on a laptop only, set"
                " MAILROOM_ENVIRONMENT=development)"
            )
        return self

    def key_problems(self) -> list[str]:
        """What is wrong with the keys, naming each variable (empty when both are fine)."""
        problems = []
        for name, variable in KEYS.items():
            key: SecretStr = getattr(self, name)
            value = key.get_secret_value()
            if value in DEVELOPMENT_KEYS:
                problems.append(f"{variable} is not set (the public development key is in use)")
            elif len(value) < MIN_KEY_LENGTH:
                problems.append(f"{variable} is shorter than {MIN_KEY_LENGTH} characters")
        previous = self.signing_key_previous
        if previous is not None and previous.get_secret_value() in DEVELOPMENT_KEYS:
            problems.append("MAILROOM_SIGNING_KEY_PREVIOUS is the public development key")
        return problems

    def warn_about_keys(self) -> None:
        """In development, say loudly at start which keys anyone can forge with."""
        for problem in self.key_problems():
            log.warning(
                "DEVELOPMENT MODE (MAILROOM_ENVIRONMENT=development): %s: anyone can forge"
                " unsubscribe links and read stored passwords; never use this outside a"
                " laptop or a demo",
                problem,
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
