"""The footers must give every recipient their unsubscribe link: checked on the template's
structure once, and on each rendered message.

Structurally, a footer passes when ``{{ unsubscribe_url }}`` is output at its top level: not
inside a condition, loop, macro, call block, filter block, set block, with/autoescape block or
an HTML comment, not transformed by a filter or an expression, and ``unsubscribe_url`` is
never reassigned. A trial render with a sample contact cannot prove that much:
``{% if contact.email == 'sample.contact@example.com' %}`` passes it.
"""

from __future__ import annotations

from jinja2 import nodes
from jinja2.environment import Environment
from markupsafe import escape

from mailroom_common.rendering.errors import RecipientProblem, TemplateProblem

NAME = "unsubscribe_url"
MISSING = (
    "must contain the unsubscribe link {{ unsubscribe_url }}, output for every recipient:"
    " on its own, outside any {% if %}, {% for %}, macro, call, filter or set block and"
    " outside HTML comments (every campaign and autoresponder email must carry a working"
    " unsubscribe link: CAN-SPAM, GDPR, RFC 8058)"
)
REASSIGNED = "must not assign to unsubscribe_url (it is each recipient's own link)"
NOT_RENDERED = "the rendered message lacks this recipient's unsubscribe link, so it was not sent"


def check_footer(environment: Environment, part: str, source: str, *, html: bool) -> None:
    """Raise TemplateProblem unless ``source`` outputs the link for every recipient.

    Call it on a template that compiled (a syntax error is reported by the compiler)."""
    tree = environment.parse(source)
    for name in tree.find_all(nodes.Name):
        if name.name == NAME and name.ctx != "load":
            raise TemplateProblem(part, REASSIGNED, name.lineno)
    static = []  # the static text so far, to know whether an HTML comment is open
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            continue
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                static.append(node.data)
            elif (
                isinstance(node, nodes.Name)
                and node.name == NAME
                and not (html and _inside_html_comment("".join(static)))
            ):
                return
    raise TemplateProblem(part, MISSING)


def _inside_html_comment(before: str) -> bool:
    return before.rfind("<!--") > before.rfind("-->")


def check_rendered(
    url: str, text_footer: str, text: list[str], html_footer: str, html: list[str]
) -> None:
    """Raise RecipientProblem unless both parts carry ``url`` (in the HTML, maybe escaped)."""
    if url not in text_footer and not any(url in piece for piece in text):
        raise RecipientProblem("text footer", NOT_RENDERED)
    if url in html_footer:
        return
    escaped = str(escape(url))
    if escaped in html_footer or any(url in p or escaped in p for p in html):
        return
    raise RecipientProblem("html footer", NOT_RENDERED)
