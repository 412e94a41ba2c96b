"""The Jinja side: the sandbox, compiling one part of a message, rendering it.

Parts are named as a marketer knows them: subject, html, text, text footer, html footer.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailroom_common.rendering.errors import TemplateProblem

SUBJECT = "subject"
HTML = "html"
TEXT = "text"
TEXT_FOOTER = "text footer"
HTML_FOOTER = "html footer"

_MAX_REPEAT = 100_000  # longest string/list that `*` may build
_MAX_EXPONENT = 1_000


def _finalize(value: Any) -> Any:
    """``{{ x }}`` with x None renders as nothing, like a missing merge field."""
    return "" if value is None else value


class Fields(dict[str, Any]):
    """The merge fields of a contact: ``contact.x`` is the field "x" or nothing, never a dict
    method (``contact.items`` or ``contact.keys`` render empty when there is no such field)."""

    __slots__ = ()


class MailroomSandbox(ImmutableSandboxedEnvironment):
    """The sandbox every template runs in.

    - Immutable: a template cannot change the merge fields or the campaign context, which are
      shared by every recipient of the campaign.
    - Missing merge fields render as empty strings, also through chains (``contact.a.b``).
    - ``contact.x`` is only ever the merge field "x" (see ``Fields``); on other mappings (the
      campaign context) an existing key also wins over a method of the same name.
    - An unsafe attribute (``''.__class__``, ``contact.__init__``...) raises ``SecurityError``
      where it is used instead of silently rendering nothing, so the trial render at compile
      time catches it.
    - ``*`` and ``**`` cannot build huge strings or numbers (nor at compile time: the
      intercepted operators are not constant-folded).
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=ChainableUndefined,
            finalize=_finalize,
            auto_reload=False,
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Fields:
            try:
                return obj[attribute]
            except KeyError:
                if attribute.startswith("_"):  # let the sandbox judge (and refuse) these
                    return super().getattr(obj, attribute)
                return self.undefined(obj=obj, name=attribute)
        if type(obj) is dict or isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (LookupError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} value is not allowed"
        )

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent larger than {_MAX_EXPONENT} is not allowed")
            return operator.pow(left, right)
        for sequence, count in ((left, right), (right, left)):
            if (
                isinstance(sequence, str | bytes | list | tuple)
                and isinstance(count, int)
                and len(sequence) * count > _MAX_REPEAT
            ):
                raise SecurityError(f"repeating a value beyond {_MAX_REPEAT} items is not allowed")
        return operator.mul(left, right)


HTML_ENVIRONMENT = MailroomSandbox(autoescape=True)
TEXT_ENVIRONMENT = MailroomSandbox(autoescape=False)


@dataclass(frozen=True)
class Part:
    """One compiled template. ``original`` is the template as the marketer wrote it when this one
    was transformed (CSS inlined, text derived from HTML): errors are located in the original.
    ``constants`` are the strings of the compiled code: the static text that rendering yields
    as is, which the body encoder encodes once."""

    name: str
    template: Template
    filename: str
    constants: frozenset[str]
    original: Part | None = None


class PartFailed(Exception):
    """Internal: rendering ``part`` raised ``error`` (at ``line`` of that part's template)."""

    def __init__(self, part: Part, error: Exception, line: int | None) -> None:
        super().__init__(part.name)
        self.part = part
        self.error = error
        self.line = line


def compile_part(
    name: str,
    source: str,
    *,
    html: bool,
    context: Mapping[str, Any],
    original: Part | None = None,
) -> Part:
    """Compile one part; raise ``TemplateProblem`` for anything wrong for every recipient."""
    environment = HTML_ENVIRONMENT if html else TEXT_ENVIRONMENT
    filename = f"<mailroom {name}>"
    try:
        tree = environment.parse(source, name=name, filename=filename)
        _check(environment, tree, name)
        code = environment.compile(tree, name=name, filename=filename)
    except TemplateSyntaxError as error:
        raise TemplateProblem(name, error.message or "syntax error", error.lineno) from None
    template = environment.template_class.from_code(
        environment, code, environment.make_globals(dict(context)), None
    )
    # a plain dict, not Jinja's ChainMap: each render copies the globals into a new context
    template.globals = dict(template.globals)
    return Part(name, template, filename, frozenset(_string_constants(code)), original)


def _string_constants(code: CodeType) -> Iterator[str]:
    for constant in code.co_consts:
        if isinstance(constant, str):
            yield constant
        elif isinstance(constant, CodeType):
            yield from _string_constants(constant)


def _check(environment: MailroomSandbox, tree: nodes.Template, name: str) -> None:
    """What Jinja would only notice when a branch runs, checked for every branch now."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Filter) and node.name not in environment.filters:
            raise TemplateProblem(name, f"unknown filter '{node.name}'", node.lineno)
        if isinstance(node, nodes.Test) and node.name not in environment.tests:
            raise TemplateProblem(name, f"unknown test '{node.name}'", node.lineno)
    for getattr_node in tree.find_all(nodes.Getattr):
        if getattr_node.attr.startswith("__"):
            raise TemplateProblem(
                name,
                f"'{getattr_node.attr}' is not allowed in a template",
                getattr_node.lineno,
            )
    for tag in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise TemplateProblem(
            name, "extends, include and import are not available in messages", tag.lineno
        )


def render_part(part: Part, variables: Mapping[str, Any]) -> str:
    try:
        return part.template.render(variables)
    except Exception as error:
        raise PartFailed(part, error, line_of(error, part.filename)) from None


def render_pieces(part: Part, variables: dict[str, Any]) -> list[str]:
    """The output as the template yields it: static text pieces are the very constants of the
    compiled code (see ``Part.constants``), the rest is what expressions produced."""
    template = part.template
    try:
        try:
            return list(template.root_render_func(template.new_context(variables)))
        except Exception:
            template.environment.handle_exception()  # re-raises, traceback pointing at lines
    except Exception as error:
        raise PartFailed(part, error, line_of(error, part.filename)) from None


def line_of(error: BaseException, filename: str) -> int | None:
    """The template line in the traceback (Jinja rewrites it to point into the template)."""
    line = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == filename:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def locate(failure: PartFailed, variables: Mapping[str, Any]) -> tuple[str, int | None]:
    """Part name and line to report: in the template the marketer wrote when ``failure`` is in a
    transformed one (re-rendering the original there reproduces the error at its own line)."""
    original = failure.part.original
    if original is None:
        return failure.part.name, failure.line
    try:
        original.template.render(variables)
    except Exception as error:
        return original.name, line_of(error, original.filename)
    return original.name, None


def fails_every_recipient(error: Exception) -> bool:
    """Whether an error seen in the trial render is the template's fault, not the data's.

    Sandbox refusals and Jinja errors other than undefined values are; plain Python errors
    (TypeError, ValueError...) are taken as caused by merge-field values, which the sample
    contact of the trial render cannot stand for.
    """
    if isinstance(error, SecurityError):
        return True
    return isinstance(error, TemplateError) and not isinstance(error, UndefinedError)


def describe(error: Exception) -> str:
    """What went wrong, without quoting values (they may be personal data)."""
    if isinstance(error, SecurityError):
        return f"not allowed in a template: {error.message}"
    if isinstance(error, TemplateError):
        return error.message or type(error).__name__
    if isinstance(error, TypeError | ArithmeticError | RecursionError):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__} (a merge field value cannot be used here)"
