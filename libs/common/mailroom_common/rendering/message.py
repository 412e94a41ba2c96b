"""compile_message (once per campaign) and CompiledMessage.render (once per recipient)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from email.utils import parseaddr
from types import MappingProxyType
from typing import Any

from mailroom_common.rendering import headers
from mailroom_common.rendering.css import inline_css, normalize_body_end
from mailroom_common.rendering.errors import RecipientProblem, TemplateProblem
from mailroom_common.rendering.html_text import html_to_text_template
from mailroom_common.rendering.limits import (
    COMPILE_SECONDS,
    RENDER_SECONDS,
    LimitExceeded,
    TookTooLong,
    budget,
)
from mailroom_common.rendering.mime import BodyEncoder, Skeleton, mostly_non_ascii, new_boundary
from mailroom_common.rendering.model import MessageContent, Recipient
from mailroom_common.rendering.templates import (
    HTML,
    HTML_ENVIRONMENT,
    HTML_FOOTER,
    SUBJECT,
    TEXT,
    TEXT_ENVIRONMENT,
    TEXT_FOOTER,
    Fields,
    Part,
    PartFailed,
    compile_part,
    describe,
    fails_every_recipient,
    locate,
    render_part,
    render_pieces,
)
from mailroom_common.rendering.unsubscribe_link import check_footer, check_rendered
from mailroom_common.urls import is_one_click_url

logger = logging.getLogger(__name__)

DERIVED_TEXT = "text (derived from html)"
_LIST_UNSUBSCRIBE_POST = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
_MAX_TOKEN = 900  # longest address/URL/id kept on one header line
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")  # printable ASCII, one @, no <>

SAMPLE_RECIPIENT = Recipient(
    email="sample.contact@example.com",
    name="Sample Contact",
    fields=MappingProxyType(
        {
            "email": "sample.contact@example.com",
            "first_name": "Sample",
            "last_name": "Contact",
            "name": "Sample Contact",
        }
    ),
    message_id="<trial-render@mailroom.invalid>",
    unsubscribe_url="https://example.invalid/unsubscribe/sample",
    manage_url="https://example.invalid/manage/sample",
    one_click_url="https://example.invalid/one-click/sample",
)


def compile_message(
    content: MessageContent,
    context: Mapping[str, Any] | None = None,
    *,
    require_unsubscribe_link: bool = True,
) -> CompiledMessage:
    """Compile a message once per campaign; raise TemplateProblem if no recipient could get it.

    Compiles every template in the sandbox (autoescape for the HTML parts only), checks that
    both footers give every recipient their unsubscribe link, inlines the CSS of the HTML once,
    derives the text template from the HTML when ``content.text`` is None, builds the headers
    and MIME skeleton shared by every recipient, and trial-renders with a sample contact.
    ``context`` holds extra template globals (e.g. ``campaign``). Takes at most
    ``COMPILE_SECONDS``; call it off the event loop.
    ``require_unsubscribe_link=False`` is for tests of rendering alone.
    """
    try:
        return budget(COMPILE_SECONDS, lambda: _compile(content, context, require_unsubscribe_link))
    except TookTooLong as error:
        raise TemplateProblem("message", str(error.message)) from None


def _compile(
    content: MessageContent, context: Mapping[str, Any] | None, require_link: bool
) -> CompiledMessage:
    globals_ = dict(context or {})
    static_headers = _static_headers(content)
    subject = compile_part(SUBJECT, content.subject, html=False, context=globals_)
    html_written = compile_part(HTML, content.html, html=True, context=globals_)
    text = (
        None
        if content.text is None
        else compile_part(TEXT, content.text, html=False, context=globals_)
    )
    text_footer = compile_part(TEXT_FOOTER, content.text_footer, html=False, context=globals_)
    html_footer = compile_part(HTML_FOOTER, content.html_footer, html=True, context=globals_)
    if require_link:
        check_footer(TEXT_ENVIRONMENT, TEXT_FOOTER, content.text_footer, html=False)
        check_footer(HTML_ENVIRONMENT, HTML_FOOTER, content.html_footer, html=True)
    html = _final_html(content.html, html_written, globals_)
    if text is None:
        text = _derived_text(content.html, html_written, globals_)
    message = CompiledMessage(
        subject=subject,
        html=html,
        text=text,
        text_footer=text_footer,
        html_footer=html_footer,
        static_headers=static_headers,
        skeleton=Skeleton.build(new_boundary()),
        html_encoder=_encoder(html, _body_end_splits(html.constants)),
        text_encoder=_encoder(text, {constant.rstrip() for constant in text.constants}),
        require_link=require_link,
    )
    message.trial_render()
    return message


class CompiledMessage:
    """A message ready to render for any recipient of the campaign."""

    __slots__ = (
        "_date",
        "_html",
        "_html_encoder",
        "_html_footer",
        "_require_link",
        "_skeleton",
        "_static_headers",
        "_subject",
        "_text",
        "_text_encoder",
        "_text_footer",
    )

    def __init__(
        self,
        *,
        subject: Part,
        html: Part,
        text: Part,
        text_footer: Part,
        html_footer: Part,
        static_headers: bytes,
        skeleton: Skeleton,
        html_encoder: BodyEncoder,
        text_encoder: BodyEncoder,
        require_link: bool,
    ) -> None:
        self._subject = subject
        self._html = html
        self._text = text
        self._text_footer = text_footer
        self._html_footer = html_footer
        self._static_headers = static_headers
        self._skeleton = skeleton
        self._html_encoder = html_encoder
        self._text_encoder = text_encoder
        self._require_link = require_link
        self._date = headers.DateHeader()

    def render(self, recipient: Recipient) -> bytes:
        """The whole RFC 5322 message for ``recipient``: CRLF line endings, 7-bit clean.

        Raises RecipientProblem when this recipient's data cannot be rendered, or when the
        template hits a rendering limit for it (``limit`` set), for instance more than
        ``RENDER_SECONDS``: call it off the event loop.
        """
        try:
            return budget(RENDER_SECONDS, lambda: self._render_or_explain(recipient))
        except TookTooLong as error:
            raise RecipientProblem("message", describe(error), limit=True) from None

    def _render_or_explain(self, recipient: Recipient) -> bytes:
        variables = _variables(recipient)
        try:
            return self._render(recipient, variables)
        except PartFailed as failure:
            part, line = locate(failure, variables)
            limit = isinstance(failure.error, LimitExceeded)
            raise RecipientProblem(part, describe(failure.error), line, limit=limit) from None

    def trial_render(self) -> None:
        """Render every part for a sample contact; raise TemplateProblem for an error that
        does not depend on the data (a sandbox refusal, a rendering limit, a Jinja runtime
        error)."""
        variables = _variables(SAMPLE_RECIPIENT)
        for part in (self._subject, self._html, self._text, self._text_footer, self._html_footer):
            try:
                budget(RENDER_SECONDS, lambda part=part: render_part(part, variables))  # type: ignore[misc]
            except TookTooLong as error:
                raise TemplateProblem(part.name, describe(error)) from None
            except PartFailed as failure:
                if fails_every_recipient(failure.error):
                    name, line = locate(failure, variables)
                    raise TemplateProblem(name, describe(failure.error), line) from None
        # a failure here depends on the data: the sample contact cannot stand for real ones
        try:
            with contextlib.suppress(PartFailed, RecipientProblem):
                budget(RENDER_SECONDS, lambda: self._render(SAMPLE_RECIPIENT, variables))
        except TookTooLong as error:
            raise TemplateProblem("message", describe(error)) from None

    def _render(self, recipient: Recipient, variables: dict[str, Any]) -> bytes:
        subject = render_part(self._subject, variables)
        html = render_pieces(self._html, variables)
        html_footer = render_part(self._html_footer, variables)
        text = render_pieces(self._text, variables)
        text_footer = render_part(self._text_footer, variables).strip("\r\n")
        if self._require_link:
            check_rendered(recipient.unsubscribe_url, text_footer, text, html_footer, html)

        for index in range(len(html) - 1, -1, -1):  # before the last </body>, if any
            piece = html[index]
            if "</body>" in piece:
                cut = piece.rfind("</body>")
                html[index : index + 1] = [piece[:cut], html_footer, piece[cut:]]
                break
        else:
            html.append(html_footer)
        if text_footer.strip():  # after a blank line
            while text and not text[-1].strip():
                text.pop()
            if text:
                text[-1] = text[-1].rstrip()
                text.append(f"\n\n{text_footer}\n")
            else:
                text.append(f"{text_footer}\n")
        text_body = self._text_encoder.encode(text)
        html_body = self._html_encoder.encode(html)
        text_base64 = self._text_encoder.use_base64
        html_base64 = self._html_encoder.use_base64

        skeleton = self._skeleton
        return b"".join(
            (
                self._static_headers,
                _to_line(recipient),
                headers.unstructured("Subject", headers.clean_phrase(subject)),
                self._date.line(),
                _message_id_line(recipient.message_id),
                _list_unsubscribe_line(recipient.one_click_url),
                *(_extra_line(name, value) for name, value in recipient.extra_headers),
                skeleton.content_type,
                skeleton.text_head[text_base64],
                text_body,
                skeleton.html_head[html_base64],
                html_body,
                skeleton.end,
            )
        )


RECIPIENT_VARIABLES = frozenset({"contact", "unsubscribe_url", "manage_url"})


def _variables(recipient: Recipient) -> dict[str, Any]:
    """What every template is given for one recipient (the names of RECIPIENT_VARIABLES)."""
    contact = Fields(email=recipient.email, name=recipient.name)
    contact.update(recipient.fields)
    return {
        "contact": contact,
        "unsubscribe_url": recipient.unsubscribe_url,
        "manage_url": recipient.manage_url,
    }


# -- per-recipient headers (values cleaned: no line break can get through) ---------------------


def _to_line(recipient: Recipient) -> bytes:
    addr = headers.clean_address(recipient.email)
    if not headers.valid_address(addr):
        raise RecipientProblem("to", "the address is not a plain ASCII email address")
    return headers.address("To", headers.clean_name(recipient.name), addr)


def _message_id_line(message_id: str) -> bytes:
    value = headers.clean_token(message_id)
    if not value.startswith("<"):
        value = f"<{value}>"
    if _MESSAGE_ID.fullmatch(value) is None or len(value) > _MAX_TOKEN:
        raise RecipientProblem("message-id", "not an ASCII <local@domain> message id")
    return f"Message-ID: {value}\r\n".encode("ascii")


def _list_unsubscribe_line(url: str) -> bytes:
    value = headers.url_for_header(url)
    if not is_one_click_url(value) or len(value) > _MAX_TOKEN:
        raise RecipientProblem(
            "list-unsubscribe", "the one-click URL is not an https URL (or http on localhost)"
        )
    return f"List-Unsubscribe: <{value}>\r\n".encode("ascii")


def _extra_line(name: str, value: str) -> bytes:
    if not headers.valid_field_name(name) or name.lower() in headers.RESERVED:
        raise RecipientProblem("extra headers", "a header name is not allowed")
    return headers.unstructured(name, headers.clean_phrase(value))


# -- compile-time helpers --------------------------------------------------------------------


def _static_headers(content: MessageContent) -> bytes:
    from_email = headers.clean_address(content.from_email)
    if not headers.valid_address(from_email):
        raise TemplateProblem("from address", "not a valid plain ASCII email address")
    lines = [
        headers.address("From", headers.clean_name(content.from_name), from_email),
        b"MIME-Version: 1.0\r\n",
    ]
    if content.reply_to:
        reply_name, reply_address = parseaddr(content.reply_to)
        reply_address = headers.clean_address(reply_address)
        if not headers.valid_address(reply_address):
            raise TemplateProblem("reply-to", "not a valid plain ASCII email address")
        lines.append(headers.address("Reply-To", headers.clean_name(reply_name), reply_address))
    lines.append(_LIST_UNSUBSCRIBE_POST)
    for name, value in content.extra_headers:
        if not headers.valid_field_name(name):
            raise TemplateProblem("extra headers", f"'{name.strip()}' is not a valid header name")
        if name.lower() in headers.RESERVED:
            raise TemplateProblem("extra headers", f"'{name}' is set by Mailroom itself")
        lines.append(headers.unstructured(name, headers.clean_phrase(value)))
    return b"".join(lines)


def _encoder(part: Part, extra_constants: set[str]) -> BodyEncoder:
    """Quoted-printable or base64 is chosen once per campaign, from the template's text."""
    constants = part.constants | extra_constants
    return BodyEncoder(constants, use_base64=mostly_non_ascii("".join(part.constants)))


def _body_end_splits(constants: frozenset[str]) -> set[str]:
    """The two halves of static text around its last </body> (where the footer goes)."""
    halves: set[str] = set()
    for text in constants:
        cut = text.rfind("</body>")
        if cut >= 0:
            halves.update((text[:cut], text[cut:]))
    return halves


def _final_html(source: str, written: Part, context: Mapping[str, Any]) -> Part:
    """The HTML template to render: CSS inlined when possible, ``</body>`` normalized."""
    inlined = inline_css(source)
    if inlined is not None:
        try:
            return compile_part(HTML, inlined, html=True, context=context, original=written)
        except TemplateProblem as problem:  # pragma: no cover - inlining keeps Jinja intact
            logger.warning("CSS not inlined, inlined template does not compile: %s", problem)
    normalized = normalize_body_end(source)
    if normalized == source:
        return written
    return compile_part(HTML, normalized, html=True, context=context)


def _derived_text(source: str, written: Part, context: Mapping[str, Any]) -> Part:
    failure = "could not be derived from the html; please write a text version"
    try:
        derived = html_to_text_template(source)
    except ValueError:
        raise TemplateProblem(TEXT, failure) from None
    try:
        return compile_part(DERIVED_TEXT, derived, html=False, context=context, original=written)
    except TemplateProblem:
        raise TemplateProblem(TEXT, failure) from None
