"""What every service of a process shares: settings, database pool, broker, signer."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field

from asyncpg.pool import Pool
from faststream.rabbit import RabbitBroker

from mailroom_common.broker import Topology, publish_event
from mailroom_common.events import Event
from mailroom_common.jobs import JobActivity
from mailroom_common.runtime_settings import SettingsStore
from mailroom_common.settings import Settings
from mailroom_common.signing import Signer


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    pool: Pool
    broker: RabbitBroker
    topology: Topology
    signer: Signer
    settings_store: SettingsStore
    instance_id: str = field(default_factory=_instance_id)
    # set when the process starts to stop: long loops end at their next unit of work
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # what this process's jobs did since it started (written by the heartbeats)
    jobs: JobActivity = field(default_factory=JobActivity)

    @classmethod
    def build(cls, settings: Settings, pool: Pool, broker: RabbitBroker) -> Runtime:
        previous = settings.signing_key_previous
        return cls(
            settings=settings,
            pool=pool,
            broker=broker,
            topology=Topology.from_settings(settings),
            settings_store=SettingsStore(pool, settings.settings_key),
            signer=Signer(
                settings.signing_key.get_secret_value().encode(),
                previous.get_secret_value().encode() if previous else None,
            ),
        )

    async def send_command(self, event: Event) -> None:
        await publish_event(self.broker, self.topology.commands, event)

    async def send_work(self, event: Event, *, routing_key: str | None = None) -> None:
        await publish_event(self.broker, self.topology.work, event, routing_key=routing_key)

    async def announce(self, event: Event) -> None:
        await publish_event(self.broker, self.topology.events, event, mandatory=False)
