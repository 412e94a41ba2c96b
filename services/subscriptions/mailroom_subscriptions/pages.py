"""The public pages: plain HTML, no external assets, no JavaScript, every value escaped.

Accessible by construction: a `lang`, one h1 per page, labelled controls in a fieldset with a
legend, a status message announced (role="status"), a visible focus outline, readable
contrast, and forms that work with the keyboard alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from mailroom_subscriptions.i18n import strings
from mailroom_subscriptions.store import Membership

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;
color:#1a1a1a;background:#fff;margin:0;padding:2rem 1rem}
main{max-width:36rem;margin:0 auto}
h1{font-size:1.6rem;margin:0 0 1rem}
h2{font-size:1.2rem;margin:2rem 0 .5rem}
fieldset{border:1px solid #767676;border-radius:4px;padding:.5rem 1rem 1rem;margin:0 0 1rem}
legend{font-weight:600;padding:0 .25rem}
.choice{display:flex;gap:.5rem;align-items:center;margin:.5rem 0}
.state{color:#4a4a4a;font-size:.9rem}
input[type=checkbox]{width:1.2rem;height:1.2rem}
button{font:inherit;padding:.5rem 1.2rem;border-radius:4px;border:2px solid #0b4f8a;
background:#0b4f8a;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#8a1010;border-color:#8a1010}
a{color:#0b4f8a}
:focus-visible,:focus{outline:3px solid #d35400;outline-offset:2px}
.status{border-left:4px solid #1d7a2e;background:#eef7ef;padding:.5rem 1rem;margin:0 0 1rem}
.note{border-left:4px solid #8a6d00;background:#fbf6e6;padding:.5rem 1rem;margin:0 0 1rem}
"""


def _page(language: str, title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{escape(language)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}</main>\n</body>\n</html>\n"
    )


def _list_names(text: dict[str, str], names: Sequence[str]) -> str:
    if not names:
        return f"<p>{escape(text['no_lists'])}</p>\n"
    items = "".join(f"<li>{escape(n)}</li>" for n in names)
    return f"<ul>{items}</ul>\n"


def invalid(language: str) -> str:
    """The one page of every unusable token: says nothing about any contact."""
    text = strings(language)
    return _page(language, text["invalid_title"], f"<p>{escape(text['invalid_body'])}</p>\n")


def error(language: str, reason: str, **values: object) -> str:
    """A refused request: what was wrong, in words a person can act on."""
    text = strings(language)
    message = text.get(f"error_{reason}", text["error_title"]).format(**values)
    return _page(language, text["error_title"], f'<p role="alert">{escape(message)}</p>\n')


def unsubscribe_form(
    language: str, email: str, list_names: Sequence[str], everything: bool, manage_url: str
) -> str:
    text = strings(language)
    if everything:
        question = escape(text["unsubscribe_question_everything"]).format(email=escape(email))
        names = ""
    else:
        question = escape(text["unsubscribe_question"]).format(email=escape(email))
        names = _list_names(text, list_names)
    body = (
        f"<p>{question}</p>\n{names}"
        '<form method="post">\n'
        '<input type="hidden" name="confirm" value="yes">\n'
        f'<button type="submit">{escape(text["unsubscribe_button"])}</button>\n'
        "</form>\n"
        f'<p><a href="{escape(manage_url)}">{escape(text["manage_link"])}</a></p>\n'
    )
    return _page(language, text["unsubscribe_title"], body)


def unsubscribed(
    language: str, email: str, list_names: Sequence[str], everything: bool, manage_url: str
) -> str:
    text = strings(language)
    if everything:
        said = escape(text["unsubscribed_body_everything"]).format(email=escape(email))
        names = ""
    else:
        said = escape(text["unsubscribed_body"]).format(email=escape(email))
        names = _list_names(text, list_names)
    body = (
        f'<p role="status">{said}</p>\n{names}'
        f'<p><a href="{escape(manage_url)}">{escape(text["manage_link"])}</a></p>\n'
    )
    return _page(language, text["unsubscribed_title"], body)


def preferences(
    language: str,
    email: str,
    lists: Sequence[Membership],
    suppressed: bool,
    saved: bool = False,
) -> str:
    text = strings(language)
    parts: list[str] = []
    if saved:
        parts.append(f'<p class="status" role="status">{escape(text["saved"])}</p>\n')
    if suppressed:
        parts.append(f'<p class="note">{escape(text["suppressed_note"])}</p>\n')
    parts.append(f"<p>{escape(text['preferences_intro']).format(email=escape(email))}</p>\n")
    parts.append('<form method="post">\n<input type="hidden" name="action" value="save">\n')
    parts.append(f"<fieldset>\n<legend>{escape(text['preferences_legend'])}</legend>\n")
    if not lists:
        parts.append(f"<p>{escape(text['preferences_none'])}</p>\n")
    for membership in lists:
        control = f"list-{membership.list_id}"
        checked = " checked" if membership.status != "unsubscribed" else ""
        state = text.get(f"state_{membership.status}", membership.status)
        parts.append(
            f'<div class="choice"><input type="checkbox" id="{control}" name="list"'
            f' value="{membership.list_id}"{checked} aria-describedby="{control}-state">'
            f'<label for="{control}">{escape(membership.name)}</label>'
            f' <span class="state" id="{control}-state">({escape(state)})</span></div>\n'
        )
    parts.append("</fieldset>\n")
    parts.append(f'<button type="submit">{escape(text["save_button"])}</button>\n</form>\n')
    parts.append(
        f"<h2>{escape(text['everything_heading'])}</h2>\n"
        f"<p>{escape(text['everything_body']).format(email=escape(email))}</p>\n"
        '<form method="post">\n<input type="hidden" name="action" value="everything">\n'
        f'<button type="submit" class="secondary">{escape(text["everything_button"])}</button>\n'
        "</form>\n"
    )
    return _page(language, text["preferences_title"], "".join(parts))
