"""What the config service offers outside itself: the admin API's OpenAPI document
(`mailroom settings openapi`).

Outside the service, only this module and `service` (its `build`) may be imported (the
import-linter contracts in pyproject.toml)."""

from mailroom_config.api import openapi_document

__all__ = ["openapi_document"]
