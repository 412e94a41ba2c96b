"""Rendering: every message is parsed back with the stdlib and checked."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from mailroom_common.rendering import (
    MessageContent,
    Recipient,
    RecipientProblem,
    TemplateProblem,
    compile_message,
)
from mailroom_common.rendering.benchmark import measure

HTML = """<!DOCTYPE html>
<html><head><title>{{ campaign.name }}</title>
<style>p { color: #333333; } .big { font-size: 20px; }</style></head>
<body>
<h1 class="big">Hello {{ contact.first_name }}!</h1>
<p>Your balance: {{ contact.balance }}</p>
<table>{% for item in contact.items %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>
</body></html>"""

TEXT_FOOTER = "Unsubscribe: {{ unsubscribe_url }}\nPreferences: {{ manage_url }}"
HTML_FOOTER = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'


def content(**changes: Any) -> MessageContent:
    values: dict[str, Any] = {
        "subject": "News for {{ contact.first_name }}",
        "html": HTML,
        "text": None,
        "from_name": "Garden & Home",
        "from_email": "news@shop.example",
        "text_footer": TEXT_FOOTER,
        "html_footer": HTML_FOOTER,
        "reply_to": "help@shop.example",
        "extra_headers": (("Auto-Submitted", "auto-generated"),),
    }
    values.update(changes)
    return MessageContent(**values)


def recipient(**changes: Any) -> Recipient:
    values: dict[str, Any] = {
        "email": "zoe@example.com",
        "name": "Zoë Müller",
        "fields": {"first_name": "Zoë", "balance": "12 €", "items": ["Seeds", "Shears"]},
        "message_id": "<42.7@mailroom.example>",
        "unsubscribe_url": "https://mail.example/u/42?t=a&s=1",
        "manage_url": "https://mail.example/m/42",
        "one_click_url": "https://mail.example/one-click/42",
        "extra_headers": (("X-Mailroom-Item", "42"),),
    }
    values.update(changes)
    return Recipient(**values)


def render(
    message_content: MessageContent | None = None,
    person: Recipient | None = None,
    context: Mapping[str, Any] | None = None,
) -> bytes:
    compiled = compile_message(
        message_content or content(), context if context is not None else {"campaign": {}}
    )
    return compiled.render(person or recipient())


def parse(data: bytes) -> EmailMessage:
    """Parse with the stdlib after checking the wire format."""
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    assert data.isascii(), "not 7-bit"
    assert data.endswith(b"\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
    for line in body.split(b"\r\n"):
        assert len(line) <= 76, line
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) with LF line endings; checks the structure on the way."""
    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = message.iter_parts()
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    for part in (text_part, html_part):
        assert part.get_content_charset() == "utf-8"
        assert not part.defects
    text = text_part.get_content().replace("\r\n", "\n")
    html = html_part.get_content().replace("\r\n", "\n")
    return text, html


# -- the message -------------------------------------------------------------------------------


def test_headers() -> None:
    data = render(context={"campaign": {"name": "Spring"}})
    message = parse(data)
    assert message["From"].addresses[0].display_name == "Garden & Home"
    assert message["From"].addresses[0].addr_spec == "news@shop.example"
    assert message["To"].addresses[0].display_name == "Zoë Müller"
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert str(message["Subject"]) == "News for Zoë"
    assert message["Message-ID"] == "<42.7@mailroom.example>"
    assert message["MIME-Version"] == "1.0"
    assert message["Reply-To"].addresses[0].addr_spec == "help@shop.example"
    assert message["List-Unsubscribe"] == "<https://mail.example/one-click/42>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailroom-Item"] == "42"
    sent = parsedate_to_datetime(str(message["Date"]))
    assert sent.utcoffset() is not None and sent.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(sent.timestamp() - time.time()) < 5
    assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", data)


def test_no_reply_to_unless_set() -> None:
    message = parse(render(content(reply_to=None)))
    assert message["Reply-To"] is None


def test_parts_and_footers() -> None:
    text, html = parts(parse(render(context={"campaign": {"name": "Spring"}})))
    assert "Hello Zoë!" in text
    assert "Your balance: 12 €" in text
    assert "Seeds" in text and "Shears" in text
    assert text.rstrip("\n").endswith(
        "\n\nUnsubscribe: https://mail.example/u/42?t=a&s=1\nPreferences: https://mail.example/m/42"
    )
    assert "Hello Zoë!" in html
    assert "<td>Seeds</td>" in html and "<td>Shears</td>" in html
    footer = '<p><a href="https://mail.example/u/42?t=a&amp;s=1">Unsubscribe</a></p>'
    assert footer + "</body>" in html
    assert html.count("Unsubscribe") == 1


def test_html_fragment_gets_footer_appended() -> None:
    text, html = parts(parse(render(content(html="<p>Hi {{ contact.first_name }}</p>"))))
    assert html.rstrip("\n") == (
        '<p>Hi Zoë</p><p><a href="https://mail.example/u/42?t=a&amp;s=1">Unsubscribe</a></p>'
    )
    assert text.startswith("Hi Zoë\n\nUnsubscribe: https://mail.example/u/42")


def test_body_tag_in_capitals_still_gets_the_footer_inside() -> None:
    _, html = parts(parse(render(content(html="<HTML><BODY><p>x</p></BODY></HTML>"))))
    assert html.rstrip("\n").endswith("Unsubscribe</a></p></body></HTML>")


def test_css_inlined_once_loop_kept_in_table() -> None:
    _, html = parts(parse(render()))
    assert "<style>" not in html
    assert 'style="color: #333333;"' in html
    assert re.search(r'<h1 class="big" style="font-size: 20px;">Hello', html)
    assert html.count("<tr>") == 2  # the loop stayed inside the table
    assert "<tbody>" not in html


def test_media_queries_stay_in_a_style_tag() -> None:
    html = (
        "<html><head><style>p { color: red; } @media (max-width: 600px) { p { color: blue; } }"
        "</style></head><body><p>{{ contact.first_name }}</p></body></html>"
    )
    _, rendered = parts(parse(render(content(html=html))))
    assert "@media (max-width: 600px)" in rendered
    assert '<p style="color: red;">Zoë</p>' in rendered


def test_empty_text_part_gets_just_the_footer() -> None:
    text, _ = parts(parse(render(content(text="{{ contact.nothing }}\n\n"))))
    assert text.startswith("Unsubscribe: https://mail.example/u/42")


def test_empty_footers_add_nothing() -> None:
    compiled = compile_message(
        content(text="Hi", text_footer="", html_footer=""), require_unsubscribe_link=False
    )
    text, html = parts(parse(compiled.render(recipient())))
    assert text == "Hi\n"
    assert html.rstrip("\n").endswith("</table>\n</body></html>")


def test_written_text_part_is_used() -> None:
    message_content = content(text="Hi {{ contact.first_name }},\nplain & simple <3\n")
    text, _ = parts(parse(render(message_content)))
    assert text.startswith("Hi Zoë,\nplain & simple <3\n\nUnsubscribe:")


def test_text_derived_from_html_keeps_links_and_merge_fields() -> None:
    html = (
        "<html><body><p>Dear {{ contact.first_name }},</p>"
        '<p>Read <a href="https://shop.example/{{ contact.slug }}">our news</a>.</p>'
        "<ul>{% for item in contact.items %}<li>{{ item }}</li>{% endfor %}</ul>"
        '<p><a href="{{ manage_url }}">Manage</a></p></body></html>'
    )
    person = recipient(fields={"first_name": "Zoë", "slug": "spring", "items": ["a", "b"]})
    text, _ = parts(parse(render(content(html=html), person)))
    assert text.startswith(
        "Dear Zoë,\n\nRead our news (https://shop.example/spring).\n\n- a\n- b\n\n"
        "Manage (https://mail.example/m/42)\n\nUnsubscribe:"
    )


def test_autoescape_in_html_only() -> None:
    message_content = content(
        subject="{{ contact.first_name }}",
        text="{{ contact.first_name }}",
        html="<p>{{ contact.first_name }}</p>",
    )
    person = recipient(fields={"first_name": "<b>Tom & Jerry</b>"})
    message = parse(render(message_content, person))
    text, html = parts(message)
    assert str(message["Subject"]) == "<b>Tom & Jerry</b>"
    assert text.startswith("<b>Tom & Jerry</b>\n")
    assert "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>" in html


def test_missing_and_none_fields_render_empty() -> None:
    message_content = content(
        subject="[{{ contact.nope }}]",
        text="a[{{ contact.nope }}]b[{{ contact.nope.deeper }}]c[{{ contact.empty }}]d",
        html="<p>[{{ contact.nope | default('friend') }}]</p>",
    )
    message = parse(render(message_content, recipient(fields={"empty": None})))
    text, html = parts(message)
    assert str(message["Subject"]) == "[]"
    assert text.startswith("a[]b[]c[]d\n")
    assert "<p>[friend]</p>" in html


def test_contact_defaults_and_fields_named_like_dict_methods() -> None:
    message_content = content(
        text="{{ contact.email }} {{ contact.name }} {{ contact.items }} [{{ contact.keys }}]"
        " {{ contact['x'] }}",
        html="<ul>{% for item in contact.items %}<li>{{ item }}</li>{% endfor %}</ul>",
    )
    person = recipient(fields={"items": "3 items", "x": "y"})
    text, _ = parts(parse(render(message_content, person)))
    assert text.startswith("zoe@example.com Zoë Müller 3 items [] y\n")
    _, html = parts(parse(render(message_content, recipient(fields={}))))
    assert html.startswith("<ul></ul>")


def test_context_and_urls_available() -> None:
    message_content = content(text="{{ campaign.name }} {{ unsubscribe_url }} {{ manage_url }}")
    text, _ = parts(parse(render(message_content, context={"campaign": {"name": "Spring"}})))
    assert text.startswith("Spring https://mail.example/u/42?t=a&s=1 https://mail.example/m/42\n")


def test_mostly_non_ascii_bodies_use_base64() -> None:
    greek = "Καλημέρα {{ contact.first_name }}, τα νέα μας για την άνοιξη είναι εδώ. " * 20
    data = render(content(text=greek, html=f"<p>{greek}</p>"))
    assert b"Content-Transfer-Encoding: base64" in data
    text, html = parts(parse(data))
    assert text.startswith("Καλημέρα Zoë, τα νέα")
    assert "<p>Καλημέρα Zoë, τα νέα" in html


def test_short_pieces_of_non_ascii_text_also_choose_base64() -> None:
    html = "<p>Привет, {{ contact.first_name }}! Это наши новости.</p>" * 30
    data = render(content(subject="Новости для {{ contact.first_name }}", html=html))
    assert data.count(b"Content-Transfer-Encoding: base64") == 2
    message = parse(data)
    text, rendered = parts(message)
    assert str(message["Subject"]) == "Новости для Zoë"
    assert text.startswith("Привет, Zoë! Это наши новости.\n\nПривет, Zoë!")
    assert rendered.startswith("<p>Привет, Zoë! Это наши новости.</p><p>Привет")


def test_long_lines_and_long_values() -> None:
    long_word = "x" * 3000
    long_name = "Ünïcode " * 60
    person = recipient(
        name=long_name, fields={"first_name": long_word, "balance": "=" * 500, "items": []}
    )
    message_content = content(subject="{{ contact.first_name }} ✓ " * 3)
    message = parse(render(message_content, person))
    text, html = parts(message)
    assert long_word in text and "=" * 500 in text and long_word in html
    # the stdlib keeps the folding space between encoded words of a display name (readers
    # following RFC 2047 drop it); words are cut after spaces, so only spacing can differ
    assert message["To"].addresses[0].display_name.split() == long_name.split()
    assert str(message["Subject"]) == f"{long_word} ✓ {long_word} ✓ {long_word} ✓"


def test_every_line_of_a_typical_message_is_short_and_well_formed() -> None:
    data = render()
    parse(data)
    head = data.partition(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


def test_boundary_differs_per_compilation_and_is_fixed_per_campaign() -> None:
    compiled = compile_message(content(), {"campaign": {}})
    first, second = compiled.render(recipient()), compiled.render(recipient(email="b@x.org"))

    def boundary(data: bytes) -> bytes:
        found = re.search(rb'boundary="([^"]+)"', data)
        assert found
        return found.group(1)

    assert boundary(first) == boundary(second)
    assert boundary(first) != boundary(compile_message(content(), {}).render(recipient()))


# -- header injection ------------------------------------------------------------------------


def test_header_injection_is_neutralised() -> None:
    person = recipient(
        name="Zoë\r\nBcc: victim@example.org",
        fields={"first_name": "Zoë\r\nBcc: victim@example.org\r\n\r\nbody"},
        one_click_url="https://mail.example/oc\r\nBcc: victim@example.org",
        extra_headers=(("X-Mailroom-Item", "42\r\nBcc: victim@example.org"),),
    )
    message_content = content(
        from_name="Shop\nBcc: victim@example.org",
        extra_headers=(("X-Campaign", "7\r\nBcc: victim@example.org"),),
    )
    data = render(message_content, person)
    message = parse(data)
    assert message["Bcc"] is None
    assert data.count(b"\r\n\r\n") >= 1 and b"\r\n\r\nbody" not in data.partition(b"--")[0]
    assert [name.lower() for name in message].count("to") == 1
    assert message["To"].addresses[0].display_name == "Zoë Bcc: victim@example.org"
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert message["List-Unsubscribe"] == "<https://mail.example/ocBcc:victim@example.org>"
    assert message["X-Campaign"] == "7 Bcc: victim@example.org"
    assert message["From"].addresses[0].display_name == "Shop Bcc: victim@example.org"
    assert str(message["Subject"]) == "News for Zoë Bcc: victim@example.org  body"
    assert message["X-Mailroom-Item"] == "42 Bcc: victim@example.org"


def test_line_breaks_in_the_address_make_it_invalid() -> None:
    with pytest.raises(RecipientProblem, match=r"^to: "):
        render(person=recipient(email="zoe@example.com\r\nBcc: victim@example.org"))
    with pytest.raises(RecipientProblem, match=r"^to: "):
        render(person=recipient(email="zoe@example.com>\r\nBcc: <victim@example.org"))
    message = parse(render(person=recipient(email="zoe@example.com\r\n")))
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"


def test_message_id_must_be_one_id() -> None:
    with pytest.raises(RecipientProblem, match=r"^message-id: "):
        render(person=recipient(message_id="<42@x>\r\nBcc: victim@example.org"))
    with pytest.raises(RecipientProblem, match=r"^message-id: "):
        render(person=recipient(message_id="no-at-sign"))
    message = parse(render(person=recipient(message_id="42.7@mailroom.example\r\n")))
    assert message["Message-ID"] == "<42.7@mailroom.example>"


def test_bad_extra_header_names_are_refused() -> None:
    with pytest.raises(RecipientProblem):
        render(person=recipient(extra_headers=(("X-Evil:\r\nBcc", "x"),)))
    with pytest.raises(RecipientProblem):
        render(person=recipient(extra_headers=(("To", "other@example.org"),)))
    with pytest.raises(TemplateProblem, match="extra headers"):
        compile_message(content(extra_headers=(("Content-Type", "text/plain"),)))
    with pytest.raises(TemplateProblem, match="extra headers"):
        compile_message(content(extra_headers=(("Bad Name", "x"),)))


def test_invalid_addresses() -> None:
    with pytest.raises(RecipientProblem, match="to"):
        render(person=recipient(email="zoë@example.com"))
    with pytest.raises(RecipientProblem, match="to"):
        render(person=recipient(email="not-an-address"))
    with pytest.raises(RecipientProblem, match="list-unsubscribe"):
        render(person=recipient(one_click_url="http://insecure.example/x"))
    with pytest.raises(TemplateProblem, match="from address"):
        compile_message(content(from_email="news at shop"))


def test_display_names_with_specials_are_quoted() -> None:
    message = parse(render(content(from_name='ACME, Inc. "Best"'), recipient(name="Doe, John")))
    assert message["From"].addresses[0].display_name == 'ACME, Inc. "Best"'
    assert message["To"].addresses[0].display_name == "Doe, John"
    assert b'To: "Doe, John" <zoe@example.com>' in render(person=recipient(name="Doe, John"))


# -- template problems (every recipient) -----------------------------------------------------


def test_syntax_error_names_part_and_line() -> None:
    html = "<html>\n<body>\n<p>{{ contact.first_name </p>\n</body></html>"
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(html=html))
    assert caught.value.part == "html" and caught.value.line == 3
    assert str(caught.value).startswith("html, line 3: ")


@pytest.mark.parametrize(
    ("field", "part"),
    [
        ("subject", "subject"),
        ("text", "text"),
        ("text_footer", "text footer"),
        ("html_footer", "html footer"),
    ],
)
def test_syntax_error_in_each_part(field: str, part: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(**{field: "ok\n{% if x %}never closed"}))
    assert caught.value.part == part
    assert str(caught.value).startswith(f"{part}, line ")


def test_unknown_filter_even_in_a_branch_not_taken() -> None:
    with pytest.raises(TemplateProblem, match=r"html, line 2: unknown filter 'shout'"):
        compile_message(content(html="<p>\n{{ contact.first_name | shout }}</p>"))
    with pytest.raises(TemplateProblem, match=r"subject, line 1: unknown filter 'nope'"):
        compile_message(content(subject="{% if false %}{{ x | nope }}{% endif %}"))
    with pytest.raises(TemplateProblem, match="unknown test 'wobbly'"):
        compile_message(content(text="{% if x is wobbly %}{% endif %}"))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ contact.__init__ }}",
        "{{ contact.__class__.__subclasses__() }}",
        "{{ '{0.__class__}'.format(contact) }}",
        "{{ campaign.tags.append('x') }}",
        "{{ 'x' * 10000000 }}",
        "{{ 10 ** 100000 }}",
        "{% include 'other.html' %}",
    ],
)
def test_sandbox_refusals_are_template_problems(template: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(html=f"<p>\n{template}</p>"), {"campaign": {"tags": ["a"]}})
    assert caught.value.part == "html"
    assert caught.value.line == 2


def test_context_cannot_be_changed_by_a_template() -> None:
    tags = ["a"]
    with pytest.raises(TemplateProblem):
        compile_message(
            content(text="{{ campaign.tags.append('b') }}"), {"campaign": {"tags": tags}}
        )
    assert tags == ["a"]


# -- recipient problems (this recipient only) ------------------------------------------------


def test_recipient_problem_for_a_field_value_a_filter_cannot_take() -> None:
    compiled = compile_message(content(html="<p>\n\nTotal: {{ contact.amount | round }}</p>"))
    good = compiled.render(recipient(fields={"amount": 12.345}))
    assert "Total: 12.0" in parts(parse(good))[1]
    with pytest.raises(RecipientProblem) as caught:
        compiled.render(recipient(fields={"amount": "secret-value"}))
    assert caught.value.part == "html" and caught.value.line == 3
    assert "secret-value" not in str(caught.value)
    assert "TypeError" in str(caught.value)
    assert caught.value.__cause__ is None


def test_recipient_problem_in_the_derived_text_points_at_the_html() -> None:
    compiled = compile_message(
        content(html="<html><body>\n<p>{{ contact.n + 1 }}</p></body></html>")
    )
    with pytest.raises(RecipientProblem) as caught:
        compiled.render(recipient(fields={"n": "x"}))
    assert caught.value.part == "html" and caught.value.line == 2


def test_recipient_problem_in_subject() -> None:
    compiled = compile_message(content(subject="{{ contact.n * 'ab' }} left"))
    assert str(parse(compiled.render(recipient(fields={"n": 2})))["Subject"]) == "abab left"
    with pytest.raises(RecipientProblem, match=r"^subject"):
        compiled.render(recipient(fields={"n": 10**9}))


# -- benchmark ---------------------------------------------------------------------------------


def test_measure_reports_speed() -> None:
    result = measure(20)
    assert result["messages"] == 20
    assert result["messages_per_second"] > 0
    assert result["us_per_message"] > 0
    assert result["template_bytes"] > 8000
