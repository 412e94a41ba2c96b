"""Property tests: whatever the values, the stdlib parses the message back to them."""

from __future__ import annotations

import binascii

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mailroom_common.rendering import MessageContent, Recipient, compile_message
from mailroom_common.rendering.html_text import html_to_text_template
from mailroom_common.rendering.mime import BodyEncoder
from markupsafe import escape

from tests.unit.test_rendering import parse, parts

COMPILED = compile_message(
    MessageContent(
        subject="{{ contact.subject }}",
        html="<p>{{ contact.body }}</p>",
        text="{{ contact.body }}",
        from_name="Shop",
        from_email="news@shop.example",
        text_footer="",
        html_footer="",
        extra_headers=(),
    ),
    require_unsubscribe_link=False,
)

LINE_BREAKS = {"\n": " ", "\r": " ", "\t": " ", "\x85": " ", "\u2028": " ", "\u2029": " "}
CONTROLS = {chr(code): "" for code in (*range(0x20), 0x7F)}


def one_line(value: str) -> str:
    """The documented normalization of header text: CRLF or any line break (and tab) becomes
    one space, other control characters are dropped, the ends are trimmed."""
    table = str.maketrans(CONTROLS | LINE_BREAKS)
    return value.replace("\r\n", "\n").translate(table).strip()


def lf(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


def person(name: str, subject: str, body: str, **fields: str) -> Recipient:
    return Recipient(
        email="someone@example.com",
        name=name,
        fields={"subject": subject, "body": body, **fields},
        message_id="<1@mailroom.example>",
        unsubscribe_url="https://mail.example/u/1",
        manage_url="https://mail.example/m/1",
        one_click_url="https://mail.example/one-click/1",
    )


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(name=st.text(max_size=120), subject=st.text(max_size=300), body=st.text(max_size=3000))
@example(name='Zoë, "the" (one) <x@y>', subject="=?utf-8?q?x?= Subject", body="a \n.\nb\t\n")
@example(name="=?utf-8?b?eA==?=", subject=" " * 5 + "x" * 2000, body="é" * 2000)
@example(name="Ünïcode " * 30, subject="\r\n\r\n", body="\r\n\r\r\n")
def test_values_round_trip(name: str, subject: str, body: str) -> None:
    data = COMPILED.render(person(name, subject, body))
    message = parse(data)
    address = message["To"].addresses[0]
    assert address.addr_spec == "someone@example.com"
    expected_name = " ".join(one_line(name).split())
    if len(expected_name.encode()) <= 40:
        assert address.display_name == expected_name
    else:
        # a long name takes several encoded words, and the stdlib (unlike RFC 2047 readers)
        # keeps the folding space between them in a display name: only spacing may differ
        assert "".join(address.display_name.split()) == "".join(expected_name.split())
    assert str(message["Subject"]) == one_line(subject)
    text, html = parts(message)
    expected_text = lf(body)
    assert text == (expected_text if expected_text.endswith("\n") else expected_text + "\n")
    assert html == f"<p>{lf(str(escape(body)))}</p>\n"


@settings(max_examples=300, deadline=None, database=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.text(max_size=200),
            st.sampled_from(["=" * 80, " " * 90, "x" * 75 + "é", "line\n", "a" * 74 + " "]),
        ),
        max_size=12,
    ),
    cached=st.integers(min_value=0, max_value=2**12),
)
def test_body_encoder_decodes_to_its_input(pieces: list[str], cached: int) -> None:
    constants = [piece for index, piece in enumerate(pieces) if cached >> index & 1]
    encoded = BodyEncoder(constants, use_base64=False).encode(pieces)
    assert encoded.isascii() and encoded.endswith(b"\r\n")
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    assert b"\r" not in encoded.replace(b"\r\n", b"")
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    decoded = binascii.a2b_qp(encoded).decode("utf-8").replace("\r\n", "\n")
    expected = lf("".join(pieces))
    assert decoded == (expected if expected.endswith("\n") else expected + "\n")


WORD = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12
).filter(lambda word: "{" not in word and "}" not in word and "<" not in word)


@settings(max_examples=200, deadline=None, database=None)
@given(words=st.lists(WORD, min_size=1, max_size=8), value=st.text(max_size=40))
def test_merge_fields_survive_the_derived_text(words: list[str], value: str) -> None:
    visible = " ".join(escape(word) for word in words)
    html = f"<html><body><p>{visible} {{{{ contact.value }}}}</p></body></html>"
    template = html_to_text_template(html)
    assert "{{ contact.value }}" in template
    compiled = compile_message(
        MessageContent(
            subject="s",
            html=html,
            text=None,
            from_name="",
            from_email="news@shop.example",
            text_footer="",
            html_footer="",
        ),
        require_unsubscribe_link=False,
    )
    text, _ = parts(parse(compiled.render(person("", "", "", value=value))))
    assert " ".join(text.split()) == " ".join(" ".join([*words, value]).split())
