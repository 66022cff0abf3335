"""Rendering with a budget: time, loop iterations and size, for templates people type.

Managers write templates in chat (a group's ``/welcome``, a campaign's ``text=``). Jinja2's
sandbox stops them reaching into Python, but not from spending the process:
``{% for i in range(100000) %}{% for j in range(1500) %}x{% endfor %}{% endfor %}`` is
150 million iterations. :class:`BudgetedEnvironment` is the sandbox plus a meter:

- every ``{% for %}`` loop, every ``range()`` element and every call counts one step;
- ``~``, ``+``, ``*``, ``%`` and ``**``, the widening filters (``center``, ``indent``,
  ``format``, ``replace``, ``wordwrap``, ``join``) and string methods (``ljust``,
  ``zfill``...) are checked *before* they build a value larger than the size budget, every
  filter's result after; ``namespace()`` attributes too (the one way to grow a value
  across loop iterations);
- the output is counted as it is produced, and the wall clock is checked as steps go.

A breach raises :class:`BudgetExceeded` (a Jinja2 ``SecurityError``), which the renderer
reports like any template error. Rendering happens inside :func:`metered`; a template
rendered with no meter active gets :data:`FILE_BUDGET`, the generous budget of the
templates shipped in ``templates/``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace

__all__ = [
    "FILE_BUDGET",
    "USER_BUDGET",
    "BudgetExceeded",
    "BudgetedEnvironment",
    "BudgetedTemplate",
    "RenderBudget",
    "explain",
    "metered",
    "render_metered",
]


@dataclass(frozen=True)
class RenderBudget:
    """How much one render may spend."""

    seconds: float
    iterations: int
    size: int  # characters of output, and of any one value built on the way


#: Text typed by managers (welcome, campaign text): a chat message is at most a few KB.
USER_BUDGET = RenderBudget(seconds=0.25, iterations=20_000, size=8_000)
#: The templates shipped with Siyu and written by its operators.
FILE_BUDGET = RenderBudget(seconds=2.0, iterations=1_000_000, size=200_000)

_CHECK_CLOCK_EVERY = 64
_COUNTED = "_siyu_counted"
_JOINED = "_siyu_join"
_WIDTH = re.compile(r"%[-+ #0]*(\d+)(?:\.(\d+))?")
_WIDENING_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map", "join", "replace"}
)


class BudgetExceeded(SecurityError):
    """A render went over its budget; ``kind`` is ``time``, ``iterations`` or ``size``."""

    def __init__(self, kind: str, limit: float) -> None:
        self.kind, self.limit = kind, limit
        units = {"time": "seconds", "iterations": "loop iterations", "size": "characters"}
        super().__init__(f"the template needs more than {limit:g} {units[kind]}")

    @property
    def budget_key(self) -> str:
        """The catalogue key explaining this breach."""
        return f"budget.template.{self.kind}"


def explain(exc: BaseException | None, locale: str | None) -> str | None:
    """If ``exc`` (or what caused it) is a budget breach — a template's, or a saved
    segment's (anything with ``budget_key`` and ``limit``) — the breach in the reader's
    language; else None."""
    from bot.core.i18n import t

    while exc is not None:
        key = getattr(exc, "budget_key", None)
        if key:
            return t(key, locale, limit=f"{getattr(exc, 'limit', 0):g}")
        exc = exc.__cause__
    return None


class _Meter:
    __slots__ = ("budget", "chars", "deadline", "steps")

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.seconds
        self.steps = 0
        self.chars = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.budget.iterations:
            raise BudgetExceeded("iterations", self.budget.iterations)
        if self.steps % _CHECK_CLOCK_EVERY < n:
            self.clock()

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded("time", self.budget.seconds)

    def size(self, n: int) -> None:
        if n > self.budget.size:
            raise BudgetExceeded("size", self.budget.size)

    def output(self, chunk: str) -> None:
        self.chars += len(chunk)
        self.size(self.chars)


_meter: ContextVar[_Meter | None] = ContextVar("siyu_template_meter", default=None)


def _current() -> _Meter:
    """The active meter; outside :func:`metered` (e.g. constant folding while compiling) a
    throwaway one that still checks sizes against FILE_BUDGET."""
    meter = _meter.get()
    return meter if meter is not None else _Meter(FILE_BUDGET)


@contextlib.contextmanager
def metered(budget: RenderBudget) -> Iterator[None]:
    """Render (and compile) inside this block under ``budget``."""
    token = _meter.set(_Meter(budget))
    try:
        yield
    finally:
        _meter.reset(token)


def render_metered(produce: Callable[[], Iterable[str]], budget: RenderBudget) -> str:
    """Join the chunks ``produce()`` yields (a template's root render function applied to
    its context), metering everything under ``budget``."""
    token = _meter.set(meter := _Meter(budget))
    try:
        parts = []
        for chunk in produce():
            meter.output(chunk)
            parts.append(chunk)
        return "".join(parts)
    finally:
        _meter.reset(token)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _counted(iterable: Any) -> Iterator[Any]:
    if isinstance(iterable, _BudgetedRange):  # counts its own elements
        yield from iterable
        return
    meter = _current()
    for item in iterable:
        meter.step()
        yield item


def _join(*parts: Any) -> str:
    meter = _current()
    text = "".join(str(p) for p in parts)
    meter.size(len(text))
    return text


class _BudgetedRange:
    """``range()`` whose elements count as steps as they are used."""

    def __init__(self, *args: int) -> None:
        self._range = range(*args)

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Iterator[int]:
        meter = _current()
        for item in self._range:
            meter.step()
            yield item

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __contains__(self, value: object) -> bool:
        return value in self._range

    def __repr__(self) -> str:
        return repr(self._range)


class _BudgetedNamespace(Namespace):
    """``namespace()`` whose attributes may not outgrow the size budget."""

    def __setitem__(self, name: str, value: Any) -> None:
        _current().size(_length(value))
        super().__setitem__(name, value)


def _budgeted_range(*args: int) -> _BudgetedRange:
    return _BudgetedRange(*args)


def _format_width(pattern: Any) -> int:
    """The widest field a ``%`` format string asks for."""
    if not isinstance(pattern, str):
        return 0
    return max((int(w or 0) + int(p or 0) for w, p in _WIDTH.findall(pattern)), default=0)


def _width(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    return _length(value)


def _checked_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` refusing, before it runs, to build a value over the size budget."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        meter = _current()
        values = [a for a in args if not isinstance(a, jinja2.runtime.Context | jinja2.Environment)]
        value = values[0] if values else None
        options = [*values[1:], *kwargs.values()]
        widest = max((_width(o) for o in options), default=0)
        if name in ("center", "indent", "wordwrap", "join", "replace"):
            count = len(value) if isinstance(value, str | list | tuple) else 1
            meter.size(_length(value) + widest * (count + 1))
        elif name == "format":
            meter.size(_format_width(value) + _length(value) + widest)
        result = fn(*args, **kwargs)
        meter.size(_length(result))
        return result

    checked.__dict__.update(getattr(fn, "__dict__", {}))  # keep jinja_pass_arg markers
    checked.__name__ = getattr(fn, "__name__", name)
    return checked


class BudgetedTemplate(jinja2.Template):
    """A template whose output is counted; outside :func:`metered` it gets FILE_BUDGET."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        ctx = self.new_context(dict(*args, **kwargs))
        active = _meter.get()
        try:
            if active is None:
                return render_metered(lambda: self.root_render_func(ctx), FILE_BUDGET)
            parts = []
            for chunk in self.root_render_func(ctx):
                active.output(chunk)
                parts.append(chunk)
            return "".join(parts)
        except Exception:
            self.environment.handle_exception()


class BudgetedEnvironment(SandboxedEnvironment):
    """Jinja2's sandbox with a render budget (see the module docstring)."""

    intercepted_binops = frozenset({"+", "*", "%", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = _budgeted_range
        self.globals["namespace"] = _BudgetedNamespace
        self.globals.pop("lipsum", None)
        self.template_class = BudgetedTemplate
        for name, fn in list(self.filters.items()):
            self.filters[name] = _checked_filter(name, fn)
        self.filters[_COUNTED] = _counted
        self.filters[_JOINED] = _join

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, then count every loop's items and check every ``~`` join."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _COUNTED, [], [], None, None, lineno=loop.lineno)
        for concat in list(tree.find_all(nodes.Concat)):
            joined = nodes.Filter(nodes.Const(""), _JOINED, [], [], nodes.List(concat.nodes), None)
            concat.nodes = [joined]
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        meter = _current()
        meter.step()
        if operator == "+":
            meter.size(_length(left) + _length(right))
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _length(seq) and isinstance(n, int):
                    meter.size(_length(seq) * max(n, 0))
        elif operator == "%":
            meter.size(_format_width(left) + _length(left) + _length(right))
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and (
                abs(left) > 1
                and right > 0
                and abs(left).bit_length() * right > 4 * meter.budget.size
            )
        ):
            raise BudgetExceeded("size", meter.budget.size)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        meter = _current()
        meter.step()
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in _WIDENING_METHODS:
            widths = [_width(a) for a in (*args, *kwargs.values())]
            if __obj.__name__ in ("format", "format_map"):
                widths += [int(d) for d in re.findall(r"\d+", owner)]
            meter.size(max([0, *widths]) + len(owner))
        result = SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        meter.size(_length(result))
        return result
