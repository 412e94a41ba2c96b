"""Size checks made before a string method, an operator or a filter builds its result.

Each guard looks at the arguments only (cheap) and raises ``LimitExceeded`` when the result
would be larger than the limits allow; what is not guarded here is still checked right after
it is built (see ``limits.bounded``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from functools import update_wrapper
from typing import Any

from mailroom_common.rendering.limits import (
    MAX_INT_BITS,
    MAX_VALUE_CHARS,
    LimitExceeded,
    bounded,
    too_large,
)

# %-format conversions: flags, width and precision (either may be '*': taken from the values)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else len(str(value))


def _number(value: Any) -> int:
    return value if isinstance(value, int) else 0


def check_percent_format(template: Any) -> None:
    """``'%10s' % x``: refuse a width or precision over the limit, or one taken from the
    values (``'%*s'``)."""
    if not isinstance(template, str | bytes):
        return
    text = template if isinstance(template, str) else template.decode("latin-1")
    for width, precision in _PERCENT.findall(text):
        for number in (width, precision):
            if number == "*":
                raise LimitExceeded("a '*' width or precision in a %-format is not allowed")
            if number and int(number) > MAX_VALUE_CHARS:
                raise too_large("a %-format field", int(number))


def check_format_string(template: str) -> None:
    """``'{:>10}'.format(x)``: refuse a width over the limit or one taken from the values."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format will say what is wrong
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise LimitExceeded("a width taken from the values ('{:{}}') is not allowed")
        for number in _DIGITS.findall(spec):
            if int(number) > MAX_VALUE_CHARS:
                raise too_large("a format field", int(number))


def _joined_length(items: Any, separator: Any) -> int:
    return sum(_length(item) for item in items) + _length(separator) * max(len(items) - 1, 0)


def _replaced_length(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    size, old_size, new_size = _length(text), _length(old), _length(new)
    places = size + 1 if old_size == 0 else size // old_size
    if isinstance(count, int) and count >= 0:
        places = min(places, count)
    return size + places * new_size


def check_method(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Before ``method(*args, **kwargs)`` on a string: refuse a result over the limit.

    Returns the arguments to call with (an iterable given to ``join`` is read once, here)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(method, "__name__", "")
    if name in ("ljust", "rjust", "center", "zfill") and args:
        if _number(args[0]) > MAX_VALUE_CHARS:
            raise too_large(f"{name}()", _number(args[0]))
    elif name == "expandtabs":
        tab = _number(args[0] if args else kwargs.get("tabsize", 8))
        if len(owner) * max(tab, 1) > MAX_VALUE_CHARS:
            raise too_large("expandtabs()", len(owner) * tab)
    elif name == "replace" and len(args) >= 2:
        size = _replaced_length(owner, *args[:3])
        if size > MAX_VALUE_CHARS:
            raise too_large("replace()", size)
    elif name == "join" and args:
        items = list(args[0])
        size = _joined_length(items, owner)
        if size > MAX_VALUE_CHARS:
            raise too_large("join()", size)
        return (items, *args[1:])
    elif name in ("format", "format_map") and isinstance(owner, str):
        check_format_string(owner)
    elif name == "translate":
        raise LimitExceeded("translate() is not available in templates")
    return args


# --- filters --------------------------------------------------------------------------------


def _check_center(value: Any, width: Any = 80, *_: Any) -> None:
    if _number(width) > MAX_VALUE_CHARS:
        raise too_large("center", _number(width))


def _check_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    indent = len(width) if isinstance(width, str) else _number(width)
    lines = str(value).count("\n") + 1
    if indent * lines + _length(value) > MAX_VALUE_CHARS:
        raise too_large("indent", indent * lines + _length(value))


def _check_format(value: Any, *_: Any, **__: Any) -> None:
    check_percent_format(value)


def _check_join(value: Any, separator: Any = "", *_: Any, **__: Any) -> None:
    size = _joined_length(value, separator)  # a list: see guarded_filter
    if size > MAX_VALUE_CHARS:
        raise too_large("join", size)


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    size = _replaced_length(value, old, new, -1 if count is None else count)
    if size > MAX_VALUE_CHARS:
        raise too_large("replace", size)


def _check_wordwrap(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else "\n") or "\n"
    size = _length(value)
    lines = size // max(_number(width), 1) + 1
    if size + lines * _length(wrapstring) > MAX_VALUE_CHARS:
        raise too_large("wordwrap", size + lines * _length(wrapstring))


def _check_count_argument(name: str) -> Callable[..., None]:
    def check(value: Any, count: Any = 1, *_: Any, **__: Any) -> None:
        if _number(count) > MAX_VALUE_CHARS:
            raise too_large(name, _number(count))

    return check


def _check_tojson(value: Any, indent: Any = None) -> None:
    if _number(indent) > 100:
        raise LimitExceeded("tojson indent larger than 100 is not allowed")


FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_center,
    "indent": _check_indent,
    "format": _check_format,
    "join": _check_join,
    "replace": _check_replace,
    "wordwrap": _check_wordwrap,
    "batch": _check_count_argument("batch"),
    "slice": _check_count_argument("slice"),
    "tojson": _check_tojson,
}


def guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, its arguments checked before (where a guard exists) and its result after.

    Keeps Jinja's pass_context/pass_eval_context/pass_environment marks (update_wrapper copies
    them): the leading argument Jinja passes for those is skipped by the guard."""
    check = FILTER_CHECKS.get(name)
    passes = getattr(function, "jinja_pass_arg", None) is not None

    first = 1 if passes else 0  # where the filtered value is

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            if name == "join" and len(args) > first:  # read the iterable once, here
                args = (*args[:first], list(args[first]), *args[first + 1 :])
            check(*args[first:], **kwargs)
        return bounded(function(*args, **kwargs))

    return update_wrapper(guarded, function)


def guarded_lipsum(function: Callable[..., str]) -> Callable[..., str]:
    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        if _number(n) > 100 or _number(max) > 1000:
            raise LimitExceeded("lipsum() of more than 100 paragraphs of 1000 words")
        return function(n, html, min, max)

    return lipsum


def check_power(left: Any, right: Any) -> None:
    if isinstance(right, int) and abs(right) > 1_000:
        raise LimitExceeded("an exponent larger than 1000 is not allowed")
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and left.bit_length() * right > MAX_INT_BITS
    ):
        raise LimitExceeded("the number would be too large")


def check_multiply(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if (
            isinstance(sequence, str | bytes | list | tuple)
            and isinstance(count, int)
            and len(sequence) * count > MAX_VALUE_CHARS
        ):
            raise too_large("repeating a value", len(sequence) * count)
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > MAX_INT_BITS
    ):
        raise LimitExceeded("the number would be too large")
