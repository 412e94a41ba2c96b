"""What the autoresponder service offers outside itself: the `mailroom` CLI checks a new
autoresponder by compiling it exactly as the service will.

Outside the service, only this module and `service` (its `build`) may be imported (the
import-linter contracts in pyproject.toml)."""

from mailroom_autoresponder.content import compile_autoresponder

__all__ = ["compile_autoresponder"]
