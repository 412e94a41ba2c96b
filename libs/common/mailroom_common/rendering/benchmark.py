"""Rendering speed on a representative message (used by ``mailroom bench``).

The HTML template is about 10 KB with 10 merge fields (13 expressions), a <style> block to
inline, a loop in a table, footers; the text part is derived from the HTML, as most campaigns do.
"""

from __future__ import annotations

import time
from types import MappingProxyType

from mailroom_common.rendering.message import compile_message
from mailroom_common.rendering.model import MessageContent, Recipient

_STYLE = """
body { margin: 0; padding: 0; background: #f4f4f4; font-family: Helvetica, Arial, sans-serif; }
.wrapper { width: 100%; background: #f4f4f4; }
.container { width: 600px; margin: 0 auto; background: #ffffff; }
h1 { font-size: 24px; color: #222222; margin: 0 0 12px; }
p { font-size: 15px; line-height: 22px; color: #444444; margin: 0 0 14px; }
.button { display: inline-block; padding: 12px 24px; background: #0066cc; color: #ffffff; }
.muted { color: #888888; font-size: 12px; }
td.item { padding: 8px; border-bottom: 1px solid #eeeeee; }
@media (max-width: 620px) { .container { width: 100% !important; } }
"""

_PARAGRAPH = (
    "<p>Spring is here, and with it a whole new range of things for your garden, your kitchen"
    " and your weekends outdoors. We picked the ones we think you will like most, based on what"
    " you looked at recently &amp; what people near you bought this month.</p>\n"
)

_HTML = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{{ campaign.name }}</title>'
    f"<style>{_STYLE}</style></head>\n<body>\n"
    '<div style="display:none">Hello {{ contact.first_name }}, your spring picks</div>\n'
    '<table class="wrapper"><tr><td><table class="container">\n'
    "<tr><td><h1>Hello {{ contact.first_name }} {{ contact.last_name }}!</h1>\n"
    "<p>Your member number is {{ contact.member_id }} and you have"
    " {{ contact.points }} points (level {{ contact.level | upper }}).</p>\n"
    "<p>New in {{ contact.city }} this spring:</p>\n"
    + (_PARAGRAPH * 15)
    + '<table>{% for item in contact.picks %}<tr><td class="item">{{ loop.index }}.</td>'
    '<td class="item">{{ item }}</td></tr>{% endfor %}</table>\n'
    "{% if contact.coupon %}<p>Your coupon: <strong>{{ contact.coupon }}</strong>,"
    " valid until {{ contact.coupon_expiry }}.</p>{% endif %}\n"
    '<p><a class="button" href="https://shop.example/spring?m={{ contact.member_id }}">'
    "See the collection</a></p>\n"
    + (_PARAGRAPH * 15)
    + '<p class="muted">You get this email as {{ contact.email }} because you joined'
    " {{ contact.signup_year }}.</p>\n"
    "</td></tr></table></td></tr></table>\n</body></html>\n"
)

CONTENT = MessageContent(
    subject="{{ contact.first_name }}, your spring picks are here",
    html=_HTML,
    text=None,
    from_name="Garden & Home",
    from_email="news@shop.example",
    text_footer="Manage your emails: {{ manage_url }}\nUnsubscribe: {{ unsubscribe_url }}",
    html_footer=(
        '<p class="muted"><a href="{{ manage_url }}">Manage your emails</a> ·'
        ' <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    ),
    reply_to="help@shop.example",
    extra_headers=(("Auto-Submitted", "auto-generated"),),
)


def recipient(number: int) -> Recipient:
    """A recipient with the 10 merge fields of the benchmark template."""
    return Recipient(
        email=f"contact{number}@example.com",
        name=f"Contact Nümber {number}",
        fields=MappingProxyType(
            {
                "first_name": "Zoë",
                "last_name": f"Müller-{number}",
                "city": "Zürich",
                "member_id": f"M{number:07d}",
                "points": number * 7 % 1000,
                "level": "gold",
                "picks": ["Seed tray", "Pruning shears", "Herb planter"],
                "coupon": f"SPRING-{number:05d}",
                "coupon_expiry": "2026-05-31",
                "signup_year": 2019,
            }
        ),
        message_id=f"<{number}.bench@mailroom.example>",
        unsubscribe_url=f"https://mail.example/u/{number}/token",
        manage_url=f"https://mail.example/m/{number}/token",
        one_click_url=f"https://mail.example/one-click/{number}/token",
        extra_headers=(("X-Mailroom-Item", str(number)),),
    )


def measure(n: int = 2000) -> dict[str, float]:
    """Render ``n`` messages; return throughput and per-message time (and sizes for context)."""
    started = time.perf_counter()
    compiled = compile_message(CONTENT, {"campaign": {"id": 1, "name": "Spring picks"}})
    compile_seconds = time.perf_counter() - started
    recipients = [recipient(i) for i in range(n)]
    size = 0
    started = time.perf_counter()
    for person in recipients:
        size += len(compiled.render(person))
    elapsed = time.perf_counter() - started
    return {
        "messages": float(n),
        "messages_per_second": n / elapsed,
        "us_per_message": elapsed / n * 1e6,
        "compile_ms": compile_seconds * 1e3,
        "template_bytes": float(len(CONTENT.html.encode())),
        "message_bytes": size / n,
    }


if __name__ == "__main__":
    for key, value in measure().items():
        print(f"{key:>20}: {value:,.1f}")
