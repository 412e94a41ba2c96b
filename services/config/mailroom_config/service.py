"""config: the authenticated admin API of the runtime settings, on MAILROOM_HTTP_PORT."""

from __future__ import annotations

import logging

from mailroom_common.runtime import Runtime
from mailroom_common.service import Service, StartRefused

from mailroom_config.api import PATHS, create_app

log = logging.getLogger(__name__)


def build(runtime: Runtime) -> Service:
    token = runtime.settings.admin_token
    if runtime.settings.environment == "production" and (
        token is None or not token.get_secret_value()
    ):
        raise StartRefused(
            "MAILROOM_ADMIN_TOKEN is not set: the config service refuses to start without the"
            " admin API's bearer token in production (MAILROOM_ENVIRONMENT=production)"
        )
    app = create_app(runtime)

    async def say_if_disabled() -> None:
        token = runtime.settings.admin_token
        if token is None or not token.get_secret_value():
            log.warning(
                "MAILROOM_ADMIN_TOKEN is not set (development mode): the admin API (/settings,"
                " /actions, /admin) answers 503 to every call until it is"
            )

    return Service("config", http_app=app, http_paths=PATHS, on_start=[say_if_disabled])
