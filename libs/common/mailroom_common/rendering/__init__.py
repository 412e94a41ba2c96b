"""Message rendering: templates compiled once per campaign, MIME bytes built per recipient.

    compiled = compile_message(content, context={"campaign": {"id": 7, "name": "Spring"}})
    data = compiled.render(recipient)   # bytes, ready for SMTP DATA

Modules, one job each: ``model`` (inputs), ``errors``, ``templates`` (Jinja sandbox),
``jinja_source`` (hiding Jinja from HTML tools), ``css`` (inlining), ``html_text`` (text part
from HTML), ``headers``, ``mime``, ``message`` (compile/render), ``benchmark``.
"""

from mailroom_common.rendering.errors import RecipientProblem, TemplateProblem
from mailroom_common.rendering.message import CompiledMessage, compile_message
from mailroom_common.rendering.model import MessageContent, Recipient

__all__ = [
    "CompiledMessage",
    "MessageContent",
    "Recipient",
    "RecipientProblem",
    "TemplateProblem",
    "compile_message",
]
