"""bounce_processor: reads the bounce mailbox, updates items and suppressions, deletes; takes
the providers' bounces and complaints by webhook (/webhooks on MAILROOM_HTTP_PORT)."""

from __future__ import annotations

import functools
import logging

from mailroom_common import activity
from mailroom_common.events import SettingsChanged
from mailroom_common.jobs import PROCESS_BOUNCE_EMAIL
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom_bounce_processor.processor import BounceProcessor
from mailroom_bounce_processor.records import Recorder
from mailroom_bounce_processor.webhooks.app import PATHS, CachedSettings, Webhooks, create_app


def build(runtime: Runtime) -> Service:
    # aioimaplib logs whole commands at DEBUG: never let a LOGIN through
    logging.getLogger("aioimaplib").setLevel(logging.WARNING)
    processor = BounceProcessor(runtime)
    webhook_settings = CachedSettings(runtime.settings_store)
    webhooks = Webhooks(
        Recorder(runtime.pool, runtime.signer),
        webhook_settings,
        runtime.announce,
        activity=functools.partial(activity.publish_bounces, runtime),
    )

    async def forget_settings(change: SettingsChanged) -> None:
        if change.group == "bounce":
            webhook_settings.forget()

    return Service(
        "bounce_processor",
        ready_checks=[processor.bounce_mailbox],
        on_start=[processor.start],
        on_drain=[processor.stop],
        on_settings_changed=[processor.on_settings_changed, forget_settings],
        http_app=create_app(webhooks),
        http_paths=PATHS,
        run_now={PROCESS_BOUNCE_EMAIL: processor.poll_now},
    )
