"""The limits of rendering: how large a template, a value and an output may be, how long one
render may take, and the watchdog that interrupts a render that takes longer.

Sizes are refused before they are built where the size is known up front (``'x' * n``,
``'x'.ljust(n)``, ``'%*s'``...) and checked right after every other step that could grow a
value (``+``, ``~``, a call, a filter, a captured block): no value gets far past
``MAX_VALUE_CHARS``, so no render can eat the memory of the process. Loops that build nothing
but take long (``range(100000)`` nested) are stopped by the clock: ``budget`` arms a watchdog
thread that raises ``RenderTimeout`` in the rendering thread when its time is up.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from jinja2.exceptions import SecurityError

MAX_TEMPLATE_CHARS = 1_000_000  # the source of one template
# the tags ({{ }}, {% %}) of one template: compiling costs 0.4-1.5 ms a tag (32,000 merge fields
# took the whole COMPILE_SECONDS of a shared consumer); a long newsletter has a few hundred
MAX_TEMPLATE_TAGS = 1_000
MAX_VALUE_CHARS = 1_000_000  # the longest string (or list) an expression may build
MAX_OUTPUT_CHARS = 2_000_000  # what one part of a message may render to
MAX_INT_BITS = 100_000  # the largest number an expression may build (about 30,000 digits)
RENDER_SECONDS = 1.0  # one recipient's message (a normal one takes well under a millisecond)
COMPILE_SECONDS = 10.0  # compiling a message once per campaign, trial render included

T = TypeVar("T")


class LimitExceeded(SecurityError):
    """A template tried to build something larger than the limits allow."""


class RenderTimeout(BaseException):
    """Raised asynchronously in a render that overran its time (a BaseException, so that no
    ``except Exception`` on the way can swallow it)."""


class TookTooLong(LimitExceeded):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"rendering took longer than {seconds:g} s (a loop is probably far too large)"
        )


def too_large(what: str, size: int, limit: int = MAX_VALUE_CHARS) -> LimitExceeded:
    return LimitExceeded(f"{what} would be {size:,} characters long; at most {limit:,} allowed")


def bounded(value: T) -> T:
    """``value`` itself, refused when it is a string or collection over the size limit."""
    if isinstance(value, str | list | tuple | bytes | dict | set) and len(value) > MAX_VALUE_CHARS:
        raise too_large("a value", len(value))
    return value


def bounded_join(pieces: Iterable[Any]) -> str:
    """``"".join`` that refuses to build a string over the limit (captured blocks, macros)."""
    items = list(pieces)
    size = 0
    for item in items:
        size += len(item)
    if size > MAX_VALUE_CHARS:
        raise too_large("a block", size)
    return "".join(items)


def bounded_call(function: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        return bounded(function(*args, **kwargs))

    return call


# --- the clock ------------------------------------------------------------------------------

_raise_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_raise_in.argtypes = (ctypes.c_ulong, ctypes.py_object)
_raise_in.restype = ctypes.c_int
_clear_in = ctypes.pythonapi["PyThreadState_SetAsyncExc"]  # the same, with NULL: clears
_clear_in.argtypes = (ctypes.c_ulong, ctypes.c_void_p)
_clear_in.restype = ctypes.c_int


class _Watchdog:
    """One daemon thread per process; it sleeps while no render is armed."""

    TICK = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}  # thread id -> when its render must be done
        self._fired: set[int] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> tuple[int, float | None]:
        """Arm for the calling thread; return what ``disarm`` needs (an outer budget nests)."""
        thread = threading.get_ident()
        deadline = time.monotonic() + seconds
        with self._lock:
            self._fired.discard(thread)
            outer = self._deadlines.get(thread)
            self._deadlines[thread] = deadline if outer is None else min(outer, deadline)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mailroom-render-watchdog", daemon=True
                )
                self._thread.start()
            if not self._wake.is_set():
                self._wake.set()
        return thread, outer

    def disarm(self, thread: int, outer: float | None) -> None:
        with self._lock:
            if outer is None:
                self._deadlines.pop(thread, None)
            else:
                self._deadlines[thread] = outer
            if thread in self._fired:  # fired, maybe not delivered yet: take it back
                self._fired.discard(thread)
                _clear_in(thread, None)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                for thread, deadline in list(self._deadlines.items()):
                    if now >= deadline:
                        del self._deadlines[thread]
                        self._fired.add(thread)
                        _raise_in(thread, RenderTimeout)
                if not self._deadlines:
                    self._wake.clear()


_WATCHDOG = _Watchdog()


def budget(seconds: float, function: Callable[[], T]) -> T:
    """``function()``, interrupted with ``TookTooLong`` after ``seconds`` of wall-clock time.

    Pure-Python work (a template's loops) is interrupted; a single call into C is not, which is
    why sizes are checked before such calls are made."""
    try:
        armed = _WATCHDOG.arm(seconds)
        try:
            return function()
        finally:
            _WATCHDOG.disarm(*armed)
    except RenderTimeout:
        raise TookTooLong(seconds) from None
