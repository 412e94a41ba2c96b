"""Derive the text-part template from the HTML template.

Why a small converter on the stdlib's ``html.parser`` rather than a library:

- html2text is GPL-3.0, which this project does not ship.
- inscriptis (Apache-2.0, well kept) was tried: it builds an lxml tree, and a tree builder moves
  text that sits where HTML allows none. ``<table>{% for r in rows %}<tr>..</tr>{% endfor %}
  </table>`` came out as ``{% for r in rows %}{% endfor %}`` followed by the row, outside the loop,
  and ``{{ "a<b" }}`` was cut at the ``<``. It also shows links as ``[text](url)`` and pulls in
  lxml and requests.
- ``html.parser`` is a streaming tokenizer: it never reorders anything, so every Jinja statement
  stays exactly where it was relative to the text around it. With the Jinja constructs hidden
  behind placeholders first (``jinja_source``), expressions such as ``{{ contact.first_name }}``
  and ``href="{{ unsubscribe_url }}"`` come out intact.

What the converter does: skips ``head``/``style``/``script``/``title`` and elements hidden with
``display:none`` (preheaders); collapses whitespace outside ``pre``; separates paragraphs and
headings by a blank line and other blocks (div, tr, li...) by a line break; shows lists as
``- item`` / ``1. item``; shows a link as ``text (url)`` (just the text when it already is the
URL; ``mailto:`` dropped from the shown address); shows image alt text; never wraps lines (that
would cut URLs and Jinja expressions; quoted-printable takes care of line length).

Jinja statements (``{% if %}``, ``{% for %}``...) are zero-width for the layout. A loop tag is
placed after the line breaks pending before it, so a loop over ``<li>`` items gives one line per
item; any other statement is placed before them, so the text after a ``{% if %}`` block is
separated from what came before it whether or not the block renders. Statements
found where no text goes (in ``<head>``, comments, attributes) are kept too, so blocks stay
balanced; if one were lost anyway, ``html_to_text_template`` raises ``ValueError``.
Whitespace-control markers (``{%-``, ``-%}``...) are dropped from the copies in the text template:
they would eat the line breaks the converter puts around blocks.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from mailroom_common.rendering.jinja_source import JinjaSpan, Protected, protect

_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "pre", "dl", "hr"}
)
_LINE = frozenset(
    {
        "div", "tr", "li", "table", "section", "article", "header", "footer", "center",
        "address", "dt", "dd", "form", "figure", "figcaption", "caption", "nav", "main",
        "aside", "tbody", "thead", "tfoot",
    }
)  # fmt: skip
_SKIP = frozenset({"head", "style", "script", "title", "template"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
     "track", "wbr"}
)  # fmt: skip
_HIDDEN = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\n\r\f\v\xa0]+")
_WS_CONTROL_START = re.compile(r"^\{([{%])[-+]")
_WS_CONTROL_END = re.compile(r"[-+]([}%])\}$")
_TEMPLATE_START = re.compile(r"\{(?=[{%#])")
_LOOP_TAG = re.compile(r"\{%[-+]?\s*(?:for|endfor)\b")


def html_to_text_template(html_template: str) -> str:
    """Return a Jinja text template that renders the text version of ``html_template``.

    ``html_template`` must be a Jinja template that compiles. Raises ``ValueError`` if a Jinja
    statement could not be placed in the text template.
    """
    protected = protect(html_template)
    converter = _Converter(protected)
    converter.feed(protected.text)
    converter.close()
    expected = [i for i, span in enumerate(protected.spans) if span.kind == "statement"]
    if sorted(converter.statements_emitted) != expected:
        raise ValueError("a Jinja statement sits where the text conversion cannot keep it")
    return _assemble(converter.result(), protected)


def _strip_whitespace_control(span: JinjaSpan) -> str:
    if span.kind == "comment":
        return ""
    return _WS_CONTROL_END.sub(r"\1}", _WS_CONTROL_START.sub(r"{\1", span.source))


def _assemble(text: str, protected: Protected) -> str:
    """Restore the Jinja constructs; make literal braces from the HTML inert for Jinja."""
    pieces = protected.pattern.split(text)  # literal, index, literal, index, ..., literal
    out: list[str] = []
    for position, piece in enumerate(pieces):
        if position % 2:
            out.append(_strip_whitespace_control(protected.spans[int(piece)]))
            continue
        literal = _TEMPLATE_START.sub("{{ '{' }}", piece)
        if literal.endswith("{") and position + 1 < len(pieces):
            literal = literal[:-1] + "{{ '{' }}"
        out.append(literal)
    return "".join(out)


class _Link:
    def __init__(self, href: str) -> None:
        self.href = href
        self.words: list[str] = []


class _Converter(HTMLParser):
    def __init__(self, protected: Protected) -> None:
        super().__init__(convert_charrefs=True)
        self._protected = protected
        self._placeholder = protected.pattern
        self._out: list[str] = []
        self._started = False  # any text written yet
        self._trailing_nl = 0  # newlines at the end of the text written (statements excluded)
        self._pending_nl = 0
        self._pending_space = False
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._pre = 0
        self._lists: list[list[int]] = []  # one [counter] per open list; counter < 0: bullets
        self._in_item = False
        self._links: list[_Link] = []
        self._cell_in_row = 0
        self.statements_emitted: list[int] = []

    # -- output primitives ---------------------------------------------------------------

    def result(self) -> str:
        lines = "".join(self._out).split("\n")
        text = "\n".join(line.rstrip() for line in lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n")

    def _block(self, newlines: int) -> None:
        self._pending_nl = max(self._pending_nl, newlines)
        self._pending_space = False

    def _flush(self, newlines_only: bool = False) -> None:
        """Write the pending line breaks (or the pending space) before new output."""
        if not self._started:
            self._pending_nl = 0
            self._pending_space = False
            return
        if self._pending_nl:
            missing = min(self._pending_nl, 2) - self._trailing_nl
            if missing > 0:
                self._out.append("\n" * missing)
                self._trailing_nl += missing
            self._pending_nl = 0
            self._pending_space = False
        elif self._pending_space and not newlines_only:
            if self._trailing_nl == 0:
                self._out.append(" ")
            self._pending_space = False

    def _word(self, word: str) -> None:
        if not word:
            return
        self._flush()
        if self._trailing_nl and self._lists:
            self._out.append("  " * (len(self._lists) - (0 if self._in_item else 1)))
        self._out.append(word)
        self._started = True
        self._trailing_nl = 0
        for link in self._links:
            link.words.append(word)

    def _raw(self, text: str) -> None:
        """Text inside <pre>: kept as is."""
        if not text:
            return
        self._flush()
        self._out.append(text)
        self._started = True
        stripped = text.rstrip("\n")
        self._trailing_nl = len(text) - len(stripped) if stripped else self._trailing_nl + len(text)
        for link in self._links:
            link.words.append(text.strip())

    def _statements_in(self, text: str) -> None:
        """Emit the Jinja statements found in ``text`` (zero-width for the layout)."""
        for match in self._placeholder.finditer(text):
            index = int(match.group(1))
            span = self._protected.spans[index]
            if span.kind == "statement":
                if _LOOP_TAG.match(span.source):
                    self._flush(newlines_only=True)
                self._out.append(match.group(0))
                self.statements_emitted.append(index)

    def _text(self, text: str) -> None:
        """Flowing text, which may hold placeholders."""
        if not text:
            return
        if self._pre:
            for index, piece in enumerate(self._placeholder.split(text)):
                if index % 2 == 0:
                    self._raw(piece)
                else:
                    self._placeholder_word(int(piece))
            return
        for position, word in enumerate(_SPACES.split(text)):
            if position:
                self._pending_space = True
            for index, piece in enumerate(self._placeholder.split(word)):
                if index % 2 == 0:
                    self._word(piece)
                else:
                    self._placeholder_word(int(piece))

    def _placeholder_word(self, index: int) -> None:
        kind = self._protected.spans[index].kind
        if kind == "statement":
            self._statements_in(self._protected.placeholder(index))
        elif kind == "expression":
            self._word(self._protected.placeholder(index))

    # -- parser callbacks ----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            self._attribute_statements(attrs)
            return
        hidden = _HIDDEN.search(attributes.get("style") or "") is not None
        if tag in _SKIP or (hidden and tag not in _VOID):
            self._attribute_statements(attrs)
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag == "a":
            self._start_link(attrs)
            return
        self._attribute_statements(attrs)
        if hidden:
            return
        self._start_element(tag, attributes)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def _start_element(self, tag: str, attributes: dict[str, str | None]) -> None:
        if tag in ("ul", "ol") and self._lists:
            self._block(1)  # a nested list
        elif tag in _PARAGRAPH:
            self._block(2)
        elif tag in _LINE:
            self._block(1)
        if tag == "br":
            if self._started:
                self._pending_nl = min(max(self._pending_nl, self._trailing_nl) + 1, 2)
                self._pending_space = False
        elif tag == "hr":
            self._word("-" * 20)
            self._block(2)
        elif tag == "pre":
            self._pre += 1
        elif tag in ("ul", "ol"):
            self._lists.append([0 if tag == "ol" else -1])
            self._in_item = False
        elif tag == "li":
            self._in_item = False
            if self._lists:
                counter = self._lists[-1]
                if counter[0] >= 0:
                    counter[0] += 1
                    bullet = f"{counter[0]}."
                else:
                    bullet = "-"
            else:
                bullet = "-"
            self._word(bullet)
            self._pending_space = True
            self._in_item = True
        elif tag == "tr":
            self._cell_in_row = 0
        elif tag in ("td", "th"):
            if self._cell_in_row:
                self._pending_space = True
            self._cell_in_row += 1
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self._pending_space = True
                self._text(alt)
                self._pending_space = True

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag == "a":
            self._end_link()
        elif tag in _PARAGRAPH or tag in _LINE:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            elif tag in ("ul", "ol") and self._lists:
                self._lists.pop()
                self._in_item = bool(self._lists)
                if self._lists:
                    self._block(1)
                    return
            elif tag == "li":
                self._in_item = False
            self._block(2 if tag in _PARAGRAPH else 1)

    def handle_data(self, data: str) -> None:
        if self._skip_tag is not None:
            self._statements_in(data)
        else:
            self._text(data)

    def handle_comment(self, data: str) -> None:
        self._statements_in(data)

    def handle_decl(self, decl: str) -> None:
        self._statements_in(decl)

    def handle_pi(self, data: str) -> None:
        self._statements_in(data)

    def unknown_decl(self, data: str) -> None:
        self._statements_in(data)

    # -- links -----------------------------------------------------------------------------

    def _attribute_statements(self, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            self._statements_in(name)
            if value:
                self._statements_in(value)

    def _start_link(self, attrs: list[tuple[str, str | None]]) -> None:
        href = ""
        for name, value in attrs:
            if name == "href" and value is not None and not href:
                href = value.strip()
            else:
                self._statements_in(name)
                if value:
                    self._statements_in(value)
        self._links.append(_Link(href))

    def _end_link(self) -> None:
        if not self._links:
            return
        link = self._links.pop()
        href = link.href
        shown = href[len("mailto:") :] if href.lower().startswith("mailto:") else href
        label = " ".join(" ".join(link.words).split())
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            self._statements_in(href)
            return
        if label in (href, shown):
            self._statements_in(href)
            return
        # the URL may hold statements and expressions: it is written as one piece
        if label:
            self._pending_space = True
            self._word(f"({_spaceless(shown)})")
        else:
            self._word(_spaceless(shown))
        self.statements_emitted.extend(
            int(m.group(1))
            for m in self._placeholder.finditer(shown)
            if self._protected.spans[int(m.group(1))].kind == "statement"
        )


def _spaceless(url: str) -> str:
    return _SPACES.sub("%20", url)
