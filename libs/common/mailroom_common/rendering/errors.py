"""The two ways rendering can fail: for the whole message, or for one recipient."""

from __future__ import annotations


class TemplateProblem(Exception):
    """A template cannot be used for any recipient.

    ``str(e)`` is a message a marketer can act on: it names the part (subject, html, text,
    text footer, html footer), the line when known, and what is wrong.
    """

    def __init__(self, part: str, problem: str, line: int | None = None) -> None:
        self.part = part
        self.line = line
        self.problem = problem
        where = part if line is None else f"{part}, line {line}"
        super().__init__(f"{where}: {problem}")


class RecipientProblem(Exception):
    """Rendering failed for this one recipient only.

    ``str(e)`` says why without quoting merge-field values or URLs (they may be personal data or
    carry tokens); the original exception is deliberately not chained for the same reason.
    ``limit`` is True when the template hit a rendering limit (time or size) for this
    recipient: a template that does so again and again is the campaign's problem.
    """

    def __init__(
        self, part: str, problem: str, line: int | None = None, *, limit: bool = False
    ) -> None:
        self.part = part
        self.line = line
        self.problem = problem
        self.limit = limit
        where = part if line is None else f"{part}, line {line}"
        super().__init__(f"{where}: {problem}")
