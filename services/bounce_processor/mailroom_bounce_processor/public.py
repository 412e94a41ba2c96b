"""What the bounce processor offers outside itself: `mailroom bounce parse` describes a
message exactly as the service reads it.

Outside the service, only this module and `service` (its `build`) may be imported (the
import-linter contracts in pyproject.toml)."""

from mailroom_bounce_processor.matching import describe

__all__ = ["describe"]
