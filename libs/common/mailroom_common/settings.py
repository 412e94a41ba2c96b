"""Deployment settings, read from the environment (prefix MAILROOM_).

Runtime settings that an administrator changes (SMTP account, footers, bounce mailbox)
live in PostgreSQL instead: see `runtime_settings`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore")

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
    stale_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Age after which a stuck item or page is handed over again.",
    )

    signing_key: SecretStr = SecretStr("mailroom-development-signing-key-change-me")
    settings_key: SecretStr = Field(
        default=SecretStr("mailroom-development-settings-key-change-me"),
        description="Encrypts the SMTP and IMAP passwords stored in the database.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the config service's admin API."
    )
    config_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where `mailroom settings ...` finds the config service's admin API.",
    )
    signing_key_previous: SecretStr | None = None
    bounce_domain: str = "bounces.mailroom.test"
    message_id_domain: str = "mailroom.test"

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    graceful_timeout_seconds: float = Field(default=30.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
