"""subscriptions: the footer's two links, public pages on MAILROOM_HTTP_PORT."""

from __future__ import annotations

from mailroom_common.runtime import Runtime
from mailroom_common.service import Service

from mailroom_subscriptions.api import PATHS, create_app


def build(runtime: Runtime) -> Service:
    return Service("subscriptions", http_app=create_app(runtime), http_paths=PATHS)
