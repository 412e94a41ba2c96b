"""The Jinja side: the sandbox, compiling one part of a message, rendering it.

Parts are named as a marketer knows them: subject, html, text, text footer, html footer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import CodeType
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailroom_common.rendering import guards
from mailroom_common.rendering.errors import TemplateProblem
from mailroom_common.rendering.limits import (
    MAX_OUTPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    MAX_TEMPLATE_TAGS,
    LimitExceeded,
    bounded,
    bounded_call,
    bounded_join,
)

SUBJECT = "subject"
HTML = "html"
TEXT = "text"
TEXT_FOOTER = "text footer"
HTML_FOOTER = "html footer"


_CHUNK = 64  # pieces of output read at a time while counting its size


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
    - Nothing a template builds gets larger than the limits (see ``limits`` and ``guards``):
      ``*``, ``**`` and ``%`` are checked before, ``+``, ``~``, calls, filters and captured
      blocks right after (neither at compile time: intercepted operators, calls and refusing
      filters are not constant-folded).
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(bounded_join)  # every captured block, macro and caller() output

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=ChainableUndefined,
            finalize=_finalize,
            auto_reload=False,
        )
        self.filters = {
            name: guards.guarded_filter(name, function) for name, function in self.filters.items()
        }
        lipsum: Any = self.globals["lipsum"]
        self.globals["lipsum"] = guards.guarded_lipsum(lipsum)

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
            guards.check_power(left, right)
            return bounded(left**right)
        if operator_ == "*":
            guards.check_multiply(left, right)
            return bounded(left * right)
        if operator_ == "%":
            guards.check_percent_format(left)
            return bounded(left % right)
        return bounded(left + right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = guards.check_method(getattr(__obj, "__wrapped__", __obj), args, kwargs)
        return bounded(super().call(__context, __obj, *args, **kwargs))


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
    repeats: bool = True  # has loops, macros or call blocks: its output is counted as it streams


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
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(
            name, f"{len(source):,} characters long; at most {MAX_TEMPLATE_CHARS:,} allowed"
        )
    tags = source.count(environment.variable_start_string) + source.count(
        environment.block_start_string
    )
    if tags > MAX_TEMPLATE_TAGS:  # counted before parsing: refused at C speed
        raise TemplateProblem(
            name,
            f"{tags:,} merge fields and tags ({{{{ }}}}, {{% %}}); at most {MAX_TEMPLATE_TAGS:,}"
            " allowed (repeat a block with {% for %} instead of writing it out)",
        )
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
    module = template.root_render_func.__globals__  # the names the compiled code calls: `~`
    for join in ("markup_join", "str_join"):
        module[join] = bounded_call(module[join])
    repeats = any(True for _ in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock)))
    constants = frozenset(_string_constants(code))
    return Part(name, template, filename, constants, original, repeats)


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


def render_part(part: Part, variables: dict[str, Any]) -> str:
    return "".join(render_pieces(part, variables))


def render_pieces(part: Part, variables: dict[str, Any]) -> list[str]:
    """The output as the template yields it: static text pieces are the very constants of the
    compiled code (see ``Part.constants``), the rest is what expressions produced. Its size is
    counted as it streams: refused once over ``MAX_OUTPUT_CHARS``."""
    template = part.template
    try:
        try:
            stream = template.root_render_func(template.new_context(variables))
            if not part.repeats:  # as many pieces as the template has, each of bounded size
                pieces = list(stream)
                _count(part, sum(map(len, pieces)))
                return pieces
            pieces = []
            size = 0
            while True:  # in chunks: counted as it streams, at C speed
                chunk = list(islice(stream, _CHUNK))
                size += sum(map(len, chunk))
                _count(part, size)
                pieces += chunk
                if len(chunk) < _CHUNK:
                    return pieces
        except Exception:
            template.environment.handle_exception()  # re-raises, traceback pointing at lines
    except Exception as error:
        raise PartFailed(part, error, line_of(error, part.filename)) from None


def _count(part: Part, size: int) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise LimitExceeded(f"the {part.name} renders to more than {MAX_OUTPUT_CHARS:,} characters")


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
    if isinstance(error, LimitExceeded):
        return f"over a rendering limit: {error.message}"
    if isinstance(error, SecurityError):
        return f"not allowed in a template: {error.message}"
    if isinstance(error, TemplateError):
        return error.message or type(error).__name__
    if isinstance(error, TypeError | ArithmeticError | RecursionError):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__} (a merge field value cannot be used here)"
