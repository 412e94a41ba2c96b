"""Inline the CSS of an HTML *template* (once per campaign) without breaking its Jinja.

css-inline parses with an HTML5 tree builder, which moves text that sits where HTML allows none
(``<table>{% for r in rows %}<tr>``: the statement would leave the table). So before inlining,
each Jinja construct where text goes becomes an HTML comment (comments stay where they are, even
in tables), and each one inside a tag, a comment or a raw-text element becomes a private-use
placeholder; both are put back afterwards. When that cannot be done safely (a construct in a tag
or attribute *name*, every construct not found back exactly once and in order, an inliner
error) the template is used as written, CSS not inlined.
"""

from __future__ import annotations

import logging
import re

import css_inline

from mailroom_common.rendering.jinja_source import Protected, protect

logger = logging.getLogger(__name__)

_INLINER = css_inline.CSSInliner(
    keep_at_rules=True,  # @media, @font-face stay in a <style> for the clients that use them
    load_remote_stylesheets=False,  # never fetch anything while compiling
    keep_link_tags=True,
)
_STYLE_TAG = re.compile(r"<style\b", re.IGNORECASE)
_MARKUP = re.compile(
    r"""(?P<comment><!--.*?(?:-->|\Z))
    |(?P<raw><(?P<rawtag>script|style|title|textarea|xmp)\b(?:"[^"]*"|'[^']*'|[^'">])*>
        .*?(?:</(?P=rawtag)\s*>|\Z))
    |(?P<tag></?[A-Za-z](?:"[^"]*"|'[^']*'|[^'">])*>)
    |(?P<declaration><![^>]*>|<\?[^>]*>)""",
    re.DOTALL | re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTE_VALUE = re.compile(r"""=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+)""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def inline_css(template: str) -> str | None:
    """The template with its ``<style>`` rules inlined, or None when it is to be used as is."""
    if not _STYLE_TAG.search(template):
        return None
    protected = protect(template)
    marked = _mark(protected)
    if marked is None:
        logger.warning("CSS not inlined: a Jinja construct sits in a tag or attribute name")
        return None
    try:
        inlined = _INLINER.inline(marked)
    except Exception as error:
        logger.warning("CSS not inlined: %s", error)
        return None
    comment = re.escape("<!--" + protected.open) + r"(\d+)" + re.escape(protected.close + "-->")
    found = re.compile(f"{comment}|{protected.pattern.pattern}")
    indices = [int(m.group(1) or m.group(2)) for m in found.finditer(inlined)]
    if indices != list(range(len(protected.spans))):
        logger.warning("CSS not inlined: the inliner moved or dropped a Jinja construct")
        return None
    if "<tbody" not in template.lower():
        # the tree builder adds <tbody>; inside {% for %} loops its start tag would repeat
        inlined = inlined.replace("<tbody>", "").replace("</tbody>", "")
    return found.sub(lambda m: protected.spans[int(m.group(1) or m.group(2))].source, inlined)


def normalize_body_end(template: str) -> str:
    """Write the closing body tag as ``</body>`` (outside Jinja constructs) so rendering can
    find where the HTML footer goes with a plain ``rfind``."""
    protected = protect(template)
    return protected.restore(_BODY_END.sub("</body>", protected.text))


def _mark(protected: Protected) -> str | None:
    """Placeholders where text goes become comments; None if one sits in a name."""
    placeholder = protected.pattern
    pieces: list[str] = []
    position = 0
    text = protected.text
    for match in _MARKUP.finditer(text):
        data = text[position : match.start()]
        if data:
            marked = _mark_data(data, protected)
            if marked is None:
                return None
            pieces.append(marked)
        markup = match.group(0)
        if match.lastgroup == "tag" and placeholder.search(_ATTRIBUTE_VALUE.sub("", markup)):
            return None
        pieces.append(markup)
        position = match.end()
    rest = _mark_data(text[position:], protected)
    if rest is None:
        return None
    pieces.append(rest)
    return "".join(pieces)


def _mark_data(data: str, protected: Protected) -> str | None:
    if re.search(r"<\s*/?\s*" + re.escape(protected.open), data):
        return None  # a tag name made by Jinja (<{{ tag }}>)
    return protected.pattern.sub(lambda m: f"<!--{m.group(0)}-->", data)
