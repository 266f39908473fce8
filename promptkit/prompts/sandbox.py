"""The only place templates run: an immutable Jinja sandbox with bounded work and bounded output.

Shared template libraries are untrusted code. Three layers keep them harmless:

1. a static check when a template is compiled: no attribute or item whose name starts with an
   underscore (the way into `__class__`, `__globals__`, `__subclasses__`...), and none of the
   names that server-side template injection relies on (`self`, `config`, `request`, `lipsum`...);
2. Jinja's ImmutableSandboxedEnvironment at render time (it also catches names built at run
   time, e.g. through the `attr` filter or `str.format`), with every violation raised at once as
   a SecurityError instead of a lazy undefined value; the data a template sees cannot be mutated;
3. budgets: loop iterations and calls per render (a step limit), the size of any string or list
   a template builds (`*`, `**`, `+`, `~`, `%`, filters and methods with huge arguments), and the
   length of the rendered text. A template that loops or expands without limit stops with an
   error instead of hanging or exhausting memory.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_STEPS = 200_000  # loop iterations + calls in one render
MAX_SIZE = 100_000  # characters (or items) in any value a template builds, and in the rendered text
MAX_EXPONENT = 64
MAX_INT_BITS = 4096
# globals and names known from template-injection payloads; none is useful in a prompt
FORBIDDEN_NAMES = frozenset({
    "self", "lipsum", "cycler", "joiner", "config", "request", "session", "url_for",
    "get_flashed_messages", "__builtins__", "builtins", "globals",
    "locals", "vars", "eval", "exec", "open", "getattr", "setattr", "import", "__import__", "os", "sys",
    "subprocess",
})
_NUMBER = re.compile(r"\d+")


class RenderBudgetError(SecurityError):
    """A render went past its step or size budget."""


class _Budget(threading.local):
    steps = MAX_STEPS


_budget = _Budget()


def reset_budget() -> None:
    _budget.steps = MAX_STEPS


def _step(n: int = 1) -> None:
    _budget.steps -= n
    if _budget.steps < 0:
        raise RenderBudgetError(
            f"the template ran more than {MAX_STEPS:,} loop iterations or calls in one render; "
            "templates must not loop without bound")


def _check_size(value: Any, what: str = "a value") -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_SIZE:
        raise RenderBudgetError(f"{what} grew past {MAX_SIZE:,} characters/items; templates must not expand without bound")
    return value


def _check_args(args: tuple, kwargs: dict, what: str) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_SIZE:
            raise RenderBudgetError(f"{what} was called with the number {value}, above the limit of {MAX_SIZE:,}")
        _check_size(value, f"an argument of {what}")


def _check_format(spec: Any, what: str) -> None:
    if isinstance(spec, str) and any(int(n) > MAX_SIZE for n in _NUMBER.findall(spec)):
        raise RenderBudgetError(f"{what} asks for a field wider than {MAX_SIZE:,} characters")


def bounded_filter(name: str, func):
    def wrapper(*args, **kwargs):
        _check_args(args[1:] if getattr(func, "jinja_pass_arg", None) else args, kwargs, f"the `{name}` filter")
        if name == "format" and args:
            _check_format(args[0], "the `format` filter")
        if name == "replace" and len(args) >= 3:
            _check_replace(*[a for a in args if not hasattr(a, "environment")][:3])
        return _check_size(func(*args, **kwargs), f"the result of the `{name}` filter")

    if hasattr(func, "jinja_pass_arg"):  # Jinja passes the context/environment first to such filters
        wrapper.jinja_pass_arg = func.jinja_pass_arg
    wrapper.__name__ = getattr(func, "__name__", name)
    return wrapper


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        grows = len(text) + (text.count(old) if old else len(text) + 1) * max(0, len(new) - len(old))
        if grows > MAX_SIZE:
            raise RenderBudgetError(f"`replace` would build a string of {grows:,} characters, above {MAX_SIZE:,}")


class PromptSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, raising at the first unsafe access, with step and size budgets."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.globals["range"] = self._range
        self.filters = {name: bounded_filter(name, f) for name, f in self.filters.items()}

    # ---- 1. static check, before any code is generated
    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for node in tree.find_all((nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
            raise SecurityError(f"line {node.lineno}: templates cannot include, import or extend other templates")
        for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
            if isinstance(node, nodes.Name):
                bad = node.name in FORBIDDEN_NAMES or node.name.startswith("_")
                label = node.name
            elif isinstance(node, nodes.Getattr):
                bad, label = node.attr.startswith("_"), "." + node.attr
            else:
                key = node.arg.value if isinstance(node.arg, nodes.Const) else None
                bad, label = isinstance(key, str) and key.startswith("_"), f"[{key!r}]"
            if bad:
                raise SecurityError(f"line {node.lineno}: `{label}` is not allowed in a template (it is a way out of the sandbox)")
        return _Bounds().visit(tree)  # loops draw from a step budget; `~` results are size-checked

    # ---- 2. every unsafe access raises immediately
    def unsafe_undefined(self, obj: Any, attribute: str):
        raise SecurityError(f"access to `{attribute}` of a {type(obj).__name__} value is not allowed in a template")

    # ---- 3. budgets
    @staticmethod
    def bounded_iter(iterable):
        for item in iterable:
            _step()
            yield item

    @staticmethod
    def bounded_value(value):
        return _check_size(value, "a concatenated string")

    @staticmethod
    def _range(*args):
        _check_args(args, {}, "range")
        return range(*args)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _step()
        _check_args(args, kwargs, f"`{getattr(__obj, '__name__', 'a function')}`")
        name = getattr(__obj, "__name__", "")
        if name in ("format", "format_map") and isinstance(getattr(__obj, "__self__", None), str):
            _check_format(__obj.__self__, "a format string")
        if name == "replace" and isinstance(getattr(__obj, "__self__", None), str) and len(args) >= 2:
            _check_replace(__obj.__self__, args[0], args[1])
        return _check_size(super().call(__context, __obj, *args, **kwargs), f"the result of `{name or 'a call'}`")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1:
                bits = abs(int(left)).bit_length() * abs(right)
                if abs(right) > MAX_EXPONENT or bits > MAX_INT_BITS:
                    raise RenderBudgetError(f"`**` would build a number of about {int(bits):,} bits; "
                                            f"exponents are limited to {MAX_EXPONENT} and results to {MAX_INT_BITS:,} bits")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SIZE:
                    raise RenderBudgetError(f"`*` would build a value of {len(seq) * n:,} characters/items, above {MAX_SIZE:,}")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, "a `%` format string")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) and len(left) + len(right) > MAX_SIZE:
                raise RenderBudgetError(f"`+` would build a value of {len(left) + len(right):,} characters/items, above {MAX_SIZE:,}")
        return _check_size(super().call_binop(context, operator, left, right), f"the result of `{operator}`")


class _Bounds(NodeTransformer):
    """Wraps every loop's iterable in `bounded_iter` and every `~` concatenation in `bounded_value`."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("bounded_value"), [node], [], None, None, lineno=node.lineno)


def render_bounded(template, context: dict) -> str:
    """Render with a fresh step budget, stopping as soon as the text passes MAX_SIZE characters."""
    reset_budget()
    parts, size = [], 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_SIZE:
            raise RenderBudgetError(f"the rendered text passed {MAX_SIZE:,} characters; templates must not expand without bound")
        parts.append(chunk)
    return "".join(parts)
