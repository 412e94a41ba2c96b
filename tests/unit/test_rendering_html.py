"""The HTML helpers of rendering: hiding Jinja, CSS inlining, deriving the text template."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest
from mailroom_common.rendering.css import inline_css, normalize_body_end
from mailroom_common.rendering.html_text import html_to_text_template
from mailroom_common.rendering.jinja_source import protect


def render_text(template: str, **variables: Any) -> str:
    environment = jinja2.Environment(undefined=jinja2.ChainableUndefined)
    return environment.from_string(template).render(**variables)


def text_of(html: str, **variables: Any) -> str:
    return render_text(html_to_text_template(html), **variables)


# -- jinja_source ------------------------------------------------------------------------------


def test_protect_and_restore_round_trip() -> None:
    source = (
        '<a href="{{ url }}">{{ "}}" ~ x }}</a>{# note #}{% if a %}<b>{% endif %}'
        "{% raw %}{{ not jinja }}{% endraw %}{{- y -}}\ue000"
    )
    protected = protect(source)
    assert [span.kind for span in protected.spans] == [
        "expression", "expression", "comment", "statement", "statement", "expression",
        "expression",
    ]  # fmt: skip
    assert "{" not in protected.text
    assert protected.open != "\ue000"  # a delimiter found in the source is not used
    assert protected.restore(protected.text) == source


# -- CSS inlining --------------------------------------------------------------------------------


def test_no_style_tag_nothing_to_inline() -> None:
    assert inline_css("<p>{{ x }}</p>") is None


def test_inlining_keeps_jinja_in_place() -> None:
    template = (
        "<html><head><style>td { padding: 4px; } a { color: red; }</style></head><body>"
        "<table>{% for row in rows %}<tr><td>{{ row }}</td></tr>{% endfor %}</table>"
        '<p>{{ "a<b" }} &amp; <a href="{{ url }}?a=1&amp;b=2" style="font-weight: bold">x</a></p>'
        "</body></html>"
    )
    inlined = inline_css(template)
    assert inlined is not None
    assert (
        '<table>{% for row in rows %}<tr><td style="padding: 4px;">{{ row }}</td></tr>'
        "{% endfor %}</table>"
    ) in inlined
    assert '{{ "a<b" }}' in inlined
    assert '<a href="{{ url }}?a=1&amp;b=2" style="color: red;font-weight: bold">' in inlined
    assert "<style>" not in inlined and "<tbody>" not in inlined


def test_inlining_skipped_when_jinja_builds_attribute_names() -> None:
    template = "<style>td { padding: 4px; }</style><table><tr><td {{ attrs }}>x</td></tr></table>"
    assert inline_css(template) is None
    template = "<style>p { color: red; }</style><{{ tag }}>x</{{ tag }}>"
    assert inline_css(template) is None


def test_inlining_skipped_when_jinja_is_inside_the_css() -> None:
    template = "<style>p { color: {{ brand }}; }</style><p>x</p><p>y</p>"
    assert inline_css(template) is None  # the placeholder would be copied into each <p>


def test_normalize_body_end() -> None:
    assert normalize_body_end("<BODY>x</Body >{{ '</BODY>' }}") == "<BODY>x</body>{{ '</BODY>' }}"


# -- HTML to text template -----------------------------------------------------------------------


def test_paragraphs_headings_and_line_breaks() -> None:
    html = (
        "<html><head><title>T</title><style>p {}</style><script>x()</script></head><body>"
        "<h1>Title</h1><p>One\n   two</p><p>Three<br>four<br><br>five</p><div>six</div>"
        "<hr><pre>  keep\n    this</pre></body></html>"
    )
    assert text_of(html) == (
        "Title\n\nOne two\n\nThree\nfour\n\nfive\n\nsix\n\n--------------------\n\n  keep\n    this"
    )


def test_links_show_their_url() -> None:
    html = (
        '<p><a href="https://a.example/x">Read more</a> '
        '<a href="https://b.example/">https://b.example/</a> '
        '<a href="mailto:help@shop.example">help@shop.example</a> '
        '<a href="mailto:help@shop.example">write to us</a> '
        '<a href="#top">top</a> '
        '<a href="https://c.example"><img src="logo.png" alt="Shop"></a> '
        '<a href="https://d.example"><img src="logo.png"></a></p>'
    )
    assert text_of(html) == (
        "Read more (https://a.example/x) https://b.example/ help@shop.example "
        "write to us (help@shop.example) top Shop (https://c.example) https://d.example"
    )


def test_jinja_survives_the_conversion() -> None:
    html = (
        "<p>Hello {{ contact.first_name }}, {{ 'a < b' }}!</p>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> | '
        '<a href="https://x.example/{{ contact.id }}?a=1&amp;b=2">Profile</a></p>'
    )
    template = html_to_text_template(html)
    assert "{{ contact.first_name }}" in template
    assert "Unsubscribe ({{ unsubscribe_url }})" in template
    assert render_text(
        template, contact={"first_name": "Zoë", "id": 7}, unsubscribe_url="https://u.example/1"
    ) == (
        "Hello Zoë, a < b!\n\nUnsubscribe (https://u.example/1) | "
        "Profile (https://x.example/7?a=1&b=2)"
    )


def test_loops_stay_loops() -> None:
    html = (
        "<p>Items:</p><ul>\n{% for item in items -%}\n<li>{{ item }}</li>\n{%- endfor %}\n</ul>"
        "<table>{% for row in rows %}<tr><td>{{ row.0 }}</td><td>{{ row.1 }}</td></tr>"
        "{% endfor %}</table><p>End</p>"
    )
    assert text_of(html, items=["a", "b"], rows=[(1, 2), (3, 4)]) == (
        "Items:\n\n- a\n- b\n\n1 2\n3 4\n\nEnd"
    )


def test_conditionals_and_statements_outside_the_text() -> None:
    html = (
        "<html><head>{% set greeting = 'Hi' %}<style>{% if x %}p{}{% endif %}</style></head>"
        "<body><!-- {% if false %}{% endif %} -->"
        "<p>{{ greeting }} {% if vip %}dear {% endif %}friend</p>"
        '<table><tr><td {% if vip %}bgcolor="gold"{% endif %}>cell</td></tr></table>'
        "{% if vip %}<p>VIP</p>{% endif %}<p>Bye</p></body></html>"
    )
    assert text_of(html, vip=True) == "Hi dear friend\n\ncell\n\nVIP\n\nBye"
    assert text_of(html, vip=False) == "Hi friend\n\ncell\n\nBye"


def test_ordered_and_nested_lists() -> None:
    html = "<ol><li>One<ul><li>sub</li></ul></li><li>Two</li></ol><p>after</p>"
    assert text_of(html) == "1. One\n  - sub\n2. Two\n\nafter"


def test_hidden_preheader_is_left_out() -> None:
    html = '<div style="display: none; max-height: 0">Preview text</div><p>Body</p>'
    assert text_of(html) == "Body"


def test_literal_braces_from_the_html_stay_literal() -> None:
    html = "<p>&#123;&#123; not a field &#125;&#125; and &#123;% nor this %&#125; {</p>"
    assert text_of(html) == "{{ not a field }} and {% nor this %} {"


def test_entities_and_raw_blocks() -> None:
    html = "<p>Fish &amp; chips&nbsp;&mdash; {% raw %}{{ shown as is }}{% endraw %}</p>"
    assert text_of(html) == "Fish & chips — {{ shown as is }}"


@pytest.mark.parametrize(
    "html",
    [
        "",
        "plain text, no tags",
        "<p>unclosed <b>bold",
        "</p></div>stray end tags",
        "<table><tr><td>a<td>b</table>",
        "<!DOCTYPE html><html><body><![CDATA[x]]><?pi?></body></html>",
    ],
)
def test_odd_html_converts(html: str) -> None:
    render_text(html_to_text_template(html))
