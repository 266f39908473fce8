"""The work a render may do: steps, wall time, integer size, and the printed size of every value, checked
*before* anything big is allocated.

A value's size is its `weight`: about how many characters it prints as, counting a list that repeats one
long string once per repetition (so `[s] * 99999` weighs 99999 * len(s), although it is cheap to build,
because printing it is not). Every value a template builds (operators, calls, filters, `~`, `set`,
namespace attributes, output) must weigh at most MAX_SIZE; operations that can amplify in one C call
(`*`, `join`, `indent`, `wordwrap`, `urlize`, `tojson(indent)`, `format`/`%`, `replace`, `expandtabs`,
`translate`, `dict.fromkeys`, `sum`) have their result estimated from their arguments first.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

MAX_STEPS = 200_000  # loop iterations + calls in one render
MAX_SIZE = 100_000  # characters (or items) in any value a template builds, and in the rendered text
MAX_EMITTED = 10 * MAX_SIZE  # characters one render may output in all, macros and `set` blocks included
MAX_SECONDS = 2.0  # wall time of one render
MAX_EXPONENT = 64
MAX_INT_BITS = 4096
_NUMBER = re.compile(r"\d+")


class RenderBudgetError(SecurityError):
    """A render went past its step, time or size budget."""


class _Budget(threading.local):
    steps = MAX_STEPS
    emitted = 0
    deadline = float("inf")


_budget = _Budget()


def reset_budget() -> None:
    _budget.steps, _budget.emitted, _budget.deadline = MAX_STEPS, 0, time.monotonic() + MAX_SECONDS


def step(n: int = 1) -> None:
    _budget.steps -= n
    if _budget.steps < 0:
        raise RenderBudgetError(f"the template ran more than {MAX_STEPS:,} loop iterations or calls in one render; "
                                "templates must not loop without bound")
    if time.monotonic() > _budget.deadline:
        raise RenderBudgetError(f"one render ran for more than {MAX_SECONDS:g} s; templates must do little work per example")


def weight(value: Any, limit: int = MAX_SIZE) -> int:
    """About how many characters `value` prints as (shared parts counted each time); stops counting past `limit`."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset, dict)):
            total += len(v) + 1
            if total <= limit:
                stack.extend(v.items() if isinstance(v, dict) else v)
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 3 + 1
        elif isinstance(v, Namespace):
            stack.append(object.__getattribute__(v, "_Namespace__attrs"))
        else:
            total += 1
        if total > limit:
            return total
    return total


def too_big(what: str, size: int) -> RenderBudgetError:
    return RenderBudgetError(f"{what} would build a value of about {size:,} characters/items, above {MAX_SIZE:,}; "
                             "templates must not expand without bound")


def check_size(value: Any, what: str = "a value") -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise RenderBudgetError(f"{what} is a number of {value.bit_length():,} bits, above the limit of {MAX_INT_BITS:,}")
    size = weight(value)
    if size > MAX_SIZE:
        raise too_big(what, size)
    return value


def emit(value: Any) -> Any:
    """Every piece of output, in the template, its macros and its `set` blocks, is counted before it is printed."""
    size = weight(value)
    _budget.emitted += size
    if size > MAX_SIZE or _budget.emitted > MAX_EMITTED:
        amount = f"a piece of {size:,} characters" if size > MAX_SIZE else f"{_budget.emitted:,} characters in all"
        raise RenderBudgetError(f"the template output {amount} in one render (limits: {MAX_SIZE:,} per piece, "
                                f"{MAX_EMITTED:,} in all, macros and `set` blocks included)")
    return value


def materialize(iterable: Iterator, what: str) -> list:
    """A lazy sequence (map, select, reverse...) drawn item by item, within the step and size budgets."""
    out, size = [], 0
    for item in iterable:
        step()
        size += weight(item) + 1
        if size > MAX_SIZE:
            raise too_big(what, size)
        out.append(item)
    return out


def check_args(args: tuple, kwargs: dict, what: str) -> tuple[tuple, dict]:
    """Arguments within the budgets; lazy ones are drawn into lists first (so their size is known)."""
    def one(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and abs(value) > MAX_SIZE:
            raise RenderBudgetError(f"{what} was called with the number {value}, above the limit of {MAX_SIZE:,}")
        if isinstance(value, Iterator):
            return materialize(value, f"an argument of {what}")
        return check_size(value, f"an argument of {what}")
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _numbers(spec: str) -> int:
    return sum(MAX_SIZE + 1 if len(n) > 6 else int(n) for n in _NUMBER.findall(spec))


def format_size(spec: Any, args: Any) -> int:
    """An upper estimate of `spec.format(*args)` / `spec % args`: every field may print every argument at the widest width."""
    if not isinstance(spec, (str, bytes)):
        return 0
    values = list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, (tuple, list)) else [args]
    ints = [abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
    fields = spec.count("{" if isinstance(spec, str) else b"{") + spec.count("%" if isinstance(spec, str) else b"%")
    text = spec if isinstance(spec, str) else spec.decode("latin-1")
    return len(spec) + _numbers(text) + fields * (weight(values) + max(ints, default=0))


def _check(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise too_big(what, size)


def _lines(s: Any) -> int:
    return (s.count("\n" if isinstance(s, str) else b"\n") + 1) if isinstance(s, (str, bytes)) else 1


def _len(s: Any) -> int:
    return len(s) if isinstance(s, (str, bytes)) else weight(s)


def _joined(parts: Any, sep: Any) -> int:
    parts = list(parts) if isinstance(parts, (list, tuple, set, frozenset, dict, range)) else [parts]
    return weight(parts) + max(len(parts) - 1, 0) * _len(sep)


def _replaced(text: Any, old: Any, new: Any, count: int = -1) -> int:
    if not (isinstance(text, (str, bytes)) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return 0
    hits = text.count(old) if old else len(text) + 1
    hits = hits if count is None or count < 0 else min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _translated(text: Any, table: Any) -> int:
    if not isinstance(text, str):
        return _len(text)
    values = table.values() if isinstance(table, dict) else table if isinstance(table, (list, tuple, str)) else ()
    return len(text) * max([1, *(_len(v) for v in values)])


# result estimates for filters, from their bound arguments
FILTER_SIZE = {
    "join": lambda a: _joined(a["value"], a["d"]),
    "indent": lambda a: _len(a["s"]) + _lines(a["s"]) * (_len(a["width"]) if isinstance(a["width"], str) else a["width"]),
    "wordwrap": lambda a: _len(a["s"]) * 2 + (2 * _len(a["s"]) // max(a["width"], 1) + _lines(a["s"])) * _len(a["wrapstring"] or "\n"),
    "urlize": lambda a: 3 * _len(a["value"]) + (_len(a["value"]) // 2 + 1) * (60 + _len(a["target"] or "") + _len(a["rel"] or "")),
    "tojson": lambda a: 6 * weight(a["value"]) * (1 + (_len(a["indent"]) if isinstance(a["indent"], str) else a["indent"] or 0)),
    "format": lambda a: format_size(a["value"], a["args"] or a["kwargs"]),
    "replace": lambda a: _replaced(a["s"], a["old"], a["new"], a["count"]),
}


def estimate_filter(name: str, func, args: tuple, kwargs: dict) -> None:
    if name not in FILTER_SIZE:
        return
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError:
        return  # the filter itself will say what is wrong with its arguments
    bound.apply_defaults()
    try:
        size = FILTER_SIZE[name](bound.arguments)
    except (TypeError, KeyError):
        return
    _check(size, f"the `{name}` filter")


def estimate_call(obj: Any, args: tuple, kwargs: dict) -> None:
    """Refuse a method call whose result would be too big, before it is made."""
    obj = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format in a function of its own
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name in ("format", "format_map"):
            size = format_size(owner, args[0] if name == "format_map" and args else (*args, *kwargs.values()))
        elif name == "replace" and len(args) >= 2:
            size = _replaced(owner, *args[:3])
        elif name == "join" and args:
            size = _joined(args[0], owner)
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            size = len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * (tab if isinstance(tab, int) else 0)
        elif name == "translate" and args:
            size = _translated(owner, args[0])
        else:
            return
        _check(size, f"`{name}`")
    elif owner is dict and name == "fromkeys" and args:
        _check(weight(args[0]) + (len(args[0]) if hasattr(args[0], "__len__") else 0) * weight(args[1:2]), "`dict.fromkeys`")


def binop_size(operator: str, left: Any, right: Any) -> None:
    """Refuse an arithmetic operation before it runs when its result would be too big."""
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (left, right))
    if operator == "**":
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1:
            bits = abs(int(left)).bit_length() * abs(right)
            if abs(right) > MAX_EXPONENT or bits > MAX_INT_BITS:
                raise RenderBudgetError(f"`**` would build a number of about {int(bits):,} bits; "
                                        f"exponents are limited to {MAX_EXPONENT} and results to {MAX_INT_BITS:,} bits")
    elif operator == "*" and ints:
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS + 1:
            raise RenderBudgetError(f"`*` would build a number of about {bits:,} bits, above the limit of {MAX_INT_BITS:,}")
    elif operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and n > 0:
                _check(weight(seq, MAX_SIZE // n + 1) * n, "`*`")
    elif operator == "%" and isinstance(left, (str, bytes)):
        _check(format_size(left, right), "a `%` format")
    elif operator == "+" and not ints:
        _check(weight(left) + weight(right), "`+`")


def concat(*parts: Any) -> str:
    """`a ~ b ~ ...`: each part and the whole are sized before anything is turned into text."""
    _check(sum(weight(p) for p in parts), "`~`")
    return "".join(map(str, parts))


def bounded_sum(environment, iterable, attribute=None, start=0):
    """The `sum` filter, adding within the budgets: lists and tuples are joined in one pass, sized as they go."""
    from jinja2.filters import make_attrgetter

    items = list(iterable) if isinstance(iterable, (list, tuple, range, set, frozenset, dict)) else materialize(iter(iterable), "`sum`")
    if attribute is not None:
        getter = make_attrgetter(environment, attribute)
        items = [getter(x) for x in items]
    if isinstance(start, (str, bytes)):
        raise TypeError("sum() can't sum strings [use the join filter instead]")
    if isinstance(start, (list, tuple)):
        out, size = list(start), weight(start)
        for item in items:
            step()
            if not isinstance(item, type(start)):
                raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(item).__name__}") to {type(start).__name__}')
            size += weight(item)
            _check(size, "`sum`")
            out.extend(item)
        return type(start)(out)
    total = start
    for item in items:
        step()
        binop_size("+", total, item)
        total = check_size(total + item, "`sum`")
    return total
