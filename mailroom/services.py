"""Every service this image can run, by name (`mailroom run NAME`, or `all`)."""

from __future__ import annotations

from mailroom_autoresponder.service import build as autoresponder
from mailroom_bounce_processor.service import build as bounce_processor
from mailroom_common.service import ServiceFactory
from mailroom_completion.service import build as completion
from mailroom_config.service import build as config
from mailroom_item_generator.service import build as item_generator
from mailroom_message_processor.service import build as message_processor
from mailroom_outbound_sender.service import build as outbound_sender
from mailroom_subscriptions.service import build as subscriptions

SERVICES: dict[str, ServiceFactory] = {
    "config": config,
    "item_generator": item_generator,
    "message_processor": message_processor,
    "outbound_sender": outbound_sender,
    "completion": completion,
    "bounce_processor": bounce_processor,
    "subscriptions": subscriptions,
    "autoresponder": autoresponder,
}
