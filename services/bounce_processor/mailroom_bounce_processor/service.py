"""bounce_processor: reads the bounce mailbox, updates items and suppressions, deletes."""

from __future__ import annotations

import logging

from mailroom_common.jobs import PROCESS_BOUNCE_EMAIL
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom_bounce_processor.processor import BounceProcessor


def build(runtime: Runtime) -> Service:
    # aioimaplib logs whole commands at DEBUG: never let a LOGIN through
    logging.getLogger("aioimaplib").setLevel(logging.WARNING)
    processor = BounceProcessor(runtime)
    return Service(
        "bounce_processor",
        ready_checks=[processor.bounce_mailbox],
        on_start=[processor.start],
        on_drain=[processor.stop],
        on_settings_changed=[processor.on_settings_changed],
        run_now={PROCESS_BOUNCE_EMAIL: processor.poll_now},
    )
