"""Rendering limits (sizes, time) and the unsubscribe link in both footers, without servers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from mailroom_common.rendering import RecipientProblem, TemplateProblem, compile_message
from mailroom_common.rendering.limits import MAX_TEMPLATE_TAGS, TookTooLong, budget
from mailroom_common.rendering.unsubscribe_link import check_rendered

from tests.unit.test_rendering import content, recipient

NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _spin() -> None:
    while True:
        pass


def test_the_watchdog_interrupts_a_pure_python_loop_and_nothing_after_it() -> None:
    with pytest.raises(TookTooLong):
        budget(0.1, _spin)
    # many quick budgets later, no interruption lands where it does not belong
    for _ in range(2000):
        assert budget(0.05, lambda: 1 + 1) == 2
    time.sleep(0.2)


def test_nested_budgets_keep_the_outer_deadline() -> None:
    def inner_then_spin() -> None:
        assert budget(5, lambda: "fine") == "fine"
        _spin()

    with pytest.raises(TookTooLong):
        budget(0.1, inner_then_spin)


def test_budgets_in_threads_are_their_own() -> None:
    outcomes: dict[str, Any] = {}

    def slow() -> None:
        try:
            budget(0.1, _spin)
        except TookTooLong:
            outcomes["slow"] = "interrupted"

    def quick() -> None:
        outcomes["quick"] = budget(5, lambda: sum(range(100_000)))

    threads = [threading.Thread(target=slow), threading.Thread(target=quick)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == {"slow": "interrupted", "quick": sum(range(100_000))}


@pytest.mark.parametrize(
    ("html", "says"),
    [
        (f"<p>{NESTED_LOOP}</p>", "rendering took longer than 1 s"),
        ("<p>{{ 'x'.ljust(10**8) }}</p>", "ljust() would be 100,000,000"),
        ("<p>{{ 'x'.center(10**8) }}</p>", "center() would be"),
        ("<p>{{ 'abcdefghijk'.replace('', 'x' * 100000) }}</p>", "replace() would be"),
        ("<p>{{ 'x' | center(10**8) }}</p>", "center would be"),
        ("<p>{{ 'a\nb' | indent(10**7) }}</p>", "indent would be"),
        ("<p>{{ ('x ' * 1000) | wordwrap(1, wrapstring='y' * 100000) }}</p>", "wordwrap"),
        ("<p>{{ ('x' * 100000) | replace('x', 'yy' * 1000) }}</p>", "replace would be"),
        ("<p>{{ 10 ** 1001 }}</p>", "exponent larger than 1000"),
        ("<p>{{ lipsum(10**6) }}</p>", "lipsum()"),
        ("<p>{{ [1] | batch(10**9, 0) | list }}</p>", "batch would be"),
        ("<p>{{ {'a': 1} | tojson(10**6) }}</p>", "tojson indent"),
        ("<p>{{ 'a'.translate({97: 'b'}) }}</p>", "translate()"),
        ("<p>{{ '{:>{}}'.format('x', 10**8) }}</p>", "width taken from the values"),
        ("<p>{{ ('%s' * 10) | format(*range(10)) }}{{ '%.99999999f' % 1.0 }}</p>", "%-format"),
        ("{% macro m() %}{{ 'q' * 600000 }}{% endmacro %}<p>{{ m() ~ m() }}</p>", "would be"),
    ],
)
def test_a_template_over_a_limit_fails_every_recipient(html: str, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(html=html))
    assert says in str(caught.value) and "over a rendering limit" in str(caught.value)
    assert time.monotonic() - started < 30  # never hangs (the limit itself is 1 s)


def test_a_limit_hit_by_one_recipient_fails_that_recipient() -> None:
    compiled = compile_message(content(html="<p>{{ contact.word * contact.times }}</p>"))
    compiled.render(recipient(fields={"word": "ab", "times": 3}))
    with pytest.raises(RecipientProblem) as caught:
        compiled.render(recipient(fields={"word": "ab", "times": 10**8}))
    assert caught.value.limit and "repeating a value" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "footer"),
    [
        (
            "text_footer",
            "{% if contact.email == 'sample.contact@example.com' %}"
            "{{ unsubscribe_url }}{% endif %}",
        ),
        ("text_footer", "{% for x in [1] %}{{ unsubscribe_url }}{% endfor %}"),
        ("text_footer", "{# {{ unsubscribe_url }} #}"),
        ("text_footer", "{% macro m() %}{{ unsubscribe_url }}{% endmacro %}{{ m() }}"),
        ("text_footer", "{% set x %}{{ unsubscribe_url }}{% endset %}{{ x }}"),
        ("text_footer", "{% filter upper %}{{ unsubscribe_url }}{% endfilter %}"),
        ("text_footer", "{{ unsubscribe_url if contact.vip }}"),
        ("text_footer", "{{ unsubscribe_url | truncate(5) }}"),
        ("text_footer", "{% set unsubscribe_url = 'https://x.example/' %}{{ unsubscribe_url }}"),
        ("html_footer", "<!-- {{ unsubscribe_url }} -->"),
        ("html_footer", "{% raw %}{{ unsubscribe_url }}{% endraw %}"),
    ],
)
def test_a_footer_must_give_every_recipient_the_link(field: str, footer: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(**{field: footer}))
    assert caught.value.part == field.replace("_", " ")


def test_a_rendered_message_without_the_recipients_link_is_refused() -> None:
    url = "https://mail.example/u/42?t=a&s=1"
    check_rendered(url, f"Bye {url}", [], '<a href="https://mail.example/u/42?t=a&amp;s=1">', [])
    with pytest.raises(RecipientProblem, match=r"^text footer: .*not sent"):
        check_rendered(url, "Bye https://mail.example/u/41", [], url, [])
    with pytest.raises(RecipientProblem, match=r"^html footer: .*not sent"):
        check_rendered(url, url, [], "<a href='https://mail.example/u/41'>", ["<p>hi</p>"])


def test_a_template_of_too_many_tags_is_refused_before_it_is_compiled() -> None:
    fields = "".join(f"{{{{ contact.f{i} }}}} " for i in range(32_000))
    with pytest.raises(TemplateProblem) as caught:
        compile_message(content(html=f"<p>{fields}</p>"))
    assert caught.value.part == "html"
    assert "32,000 merge fields and tags" in str(caught.value)
    assert f"at most {MAX_TEMPLATE_TAGS:,}" in str(caught.value)
    at_the_limit = "".join(f"{{{{ contact.f{i % 50} }}}} " for i in range(MAX_TEMPLATE_TAGS - 10))
    compile_message(content(html=f"<p>{at_the_limit}</p>"))
