"""A benchmark run's own installation: a database and queue prefix no one else uses."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import BrokerPolicyError, remove_delivery_limit
from mailroom_common.db import create_pool, quote_ident
from mailroom_common.dkim_signing import new_private_key
from mailroom_common.migrate import migrate
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount
from mailroom_common.settings import Settings

from mailroom.demo import demo_settings


@dataclass
class BenchInstallation:
    """`mailroom_bench_<tag>` and `bench-<tag>`: two runs on one machine never collide."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = demo_settings(database=self.database, prefix=f"bench-{self.tag}")

    @property
    def database(self) -> str:
        return f"mailroom_bench_{self.tag}"

    @property
    def admin_url(self) -> str:
        """The server's `postgres` database: what the benchmark itself reads there (the
        statistics) is not counted against the benchmark's database."""
        return urlunsplit(urlsplit(self.settings.database_url)._replace(path="/postgres"))

    def service_env(self) -> dict[str, str]:
        return {
            "MAILROOM_DATABASE_URL": self.settings.database_url,
            "MAILROOM_QUEUE_PREFIX": self.settings.queue_prefix,
            "MAILROOM_ENVIRONMENT": self.settings.environment,
        }

    async def create(
        self, smtp_port: int, pool_size: int, rate: float = 0, dkim: bool = False
    ) -> None:
        """A migrated database whose SMTP account is the sink, at `rate` messages a second
        (0: unlimited); with `dkim`, signing every message with a 2048-bit RSA key made for
        the run."""
        signing = (
            {
                "dkim_domain": "mailroom.test",  # the bench campaign's From domain
                "dkim_selector": "bench",
                "dkim_private_key": new_private_key("rsa-sha256"),
            }
            if dkim
            else {}
        )
        await migrate(self.settings.database_url, create_database=True)
        pool = await create_pool(self.settings)
        try:
            await SettingsStore(pool, self.settings.settings_key).save(
                SmtpAccount.model_validate(
                    {
                        "host": "127.0.0.1",
                        "port": smtp_port,
                        "security": "none",
                        "pool_size": pool_size,
                        "messages_per_second": rate,
                        **signing,
                    }
                ),
                changed_by="bench",
            )
        finally:
            await pool.close()

    async def drop(self) -> None:
        """Drop the database, the queues and the exchanges of this run."""
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(
                f"DROP DATABASE IF EXISTS {quote_ident(self.database)} WITH (FORCE)"
            )
        finally:
            await admin.close()
        topology = Topology.from_settings(self.settings)
        async with asyncio.timeout(120):  # a broker that does not answer must not hang the run
            connection = await aio_pika.connect(self.settings.rabbitmq_url, timeout=15)
            async with connection:
                channel = await connection.channel()
                for name in topology.all_queue_names():
                    await channel.queue_delete(name)
                for exchange in topology.exchanges():
                    await channel.exchange_delete(exchange.name)
            with contextlib.suppress(BrokerPolicyError):
                await remove_delivery_limit(self.settings, topology)

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each work queue (retry tiers and DLQs are not waited for)."""
        topology = Topology.from_settings(self.settings)
        names = sorted({queue.name for queue, _, _ in topology.bindings()})
        depths: dict[str, int] = {}
        connection = await aio_pika.connect(self.settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = queue.declaration_result.message_count or 0
        return depths
