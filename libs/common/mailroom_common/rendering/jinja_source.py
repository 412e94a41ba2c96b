"""Hide the Jinja constructs of an HTML template behind placeholders, and put them back.

HTML tools (the CSS inliner, the HTML-to-text converter) must see neither ``{{ a < b }}`` nor
``{% for %}`` as markup. ``protect`` swaps every Jinja construct for a placeholder made of two
private-use characters around its index; ``Protected.restore`` swaps them back. Only call this on
a template that Jinja already compiled: every construct is then terminated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["expression", "statement", "comment"]

_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_JINJA = re.compile(
    r"(?P<raw>\{%[-+]?\s*raw\s*[-+]?%\}.*?\{%[-+]?\s*endraw\s*[-+]?%\})"
    r"|(?P<comment>\{#.*?#\})"
    rf"|(?P<expression>\{{\{{(?:{_STRING}|[^'\"}}]|\}}(?!\}}))*\}}\}})"
    rf"|(?P<statement>\{{%(?:{_STRING}|[^'\"%]|%(?!\}}))*%\}})",
    re.DOTALL,
)

# Candidate placeholder delimiters (Unicode private-use characters); the first pair absent from
# the source is used, so a template that happens to contain one still round-trips.
_DELIMITERS = [(chr(c), chr(c + 1)) for c in range(0xE000, 0xF8FF, 2)]


@dataclass(frozen=True)
class JinjaSpan:
    source: str
    kind: Kind  # a {% raw %} block counts as an expression: it outputs text


@dataclass(frozen=True)
class Protected:
    text: str  # the source, each Jinja construct replaced by its placeholder
    spans: tuple[JinjaSpan, ...]
    open: str
    close: str

    def placeholder(self, index: int) -> str:
        return f"{self.open}{index}{self.close}"

    @property
    def pattern(self) -> re.Pattern[str]:
        """Matches one placeholder; group 1 is its index."""
        return re.compile(re.escape(self.open) + r"(\d+)" + re.escape(self.close))

    def restore(self, text: str, transform: Callable[[JinjaSpan], str] | None = None) -> str:
        """Put the Jinja source back in place of each placeholder (optionally transformed)."""

        def put_back(match: re.Match[str]) -> str:
            span = self.spans[int(match.group(1))]
            return span.source if transform is None else transform(span)

        return self.pattern.sub(put_back, text)


def protect(source: str) -> Protected:
    opening, closing = next((o, c) for o, c in _DELIMITERS if o not in source and c not in source)
    spans: list[JinjaSpan] = []

    def replace(match: re.Match[str]) -> str:
        kind: Kind = "expression" if match.lastgroup == "raw" else match.lastgroup  # type: ignore[assignment]
        spans.append(JinjaSpan(match.group(0), kind))
        return f"{opening}{len(spans) - 1}{closing}"

    text = _JINJA.sub(replace, source)
    return Protected(text, tuple(spans), opening, closing)
