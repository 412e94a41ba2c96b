"""Every service this image can run, by name (`mailroom run NAME`, or `all`).

A service's modules are imported only when it runs: a process running one service does
not carry the others' libraries (the bounce parser, the admin API, ...) in its memory."""

from __future__ import annotations

import importlib

from mailroom_common.service import ServiceFactory

SERVICES: dict[str, str] = {
    "config": "mailroom_config.service",
    "item_generator": "mailroom_item_generator.service",
    "message_processor": "mailroom_message_processor.service",
    "outbound_sender": "mailroom_outbound_sender.service",
    "completion": "mailroom_completion.service",
    "bounce_processor": "mailroom_bounce_processor.service",
    "subscriptions": "mailroom_subscriptions.service",
    "autoresponder": "mailroom_autoresponder.service",
}


def service_factory(name: str) -> ServiceFactory:
    """The `build` function of the service called `name` (imported now)."""
    factory: ServiceFactory = importlib.import_module(SERVICES[name]).build
    return factory
