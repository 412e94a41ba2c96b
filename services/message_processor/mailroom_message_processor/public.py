"""What the message processor offers outside itself: a campaign's message compiled exactly
as the service compiles it (the benchmark's bare SMTP loop sends such messages).

Outside the service, only this module and `service` (its `build`) may be imported (the
import-linter contracts in pyproject.toml)."""

from mailroom_message_processor.campaign_content import compile_campaign

__all__ = ["compile_campaign"]
