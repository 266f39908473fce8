"""The only place templates run: an immutable Jinja sandbox with bounded work and bounded output.

Shared template libraries are untrusted code. Three layers keep them harmless:

1. a static check when a template is compiled: no attribute or item whose name starts with an
   underscore (the way into `__class__`, `__globals__`, `__subclasses__`...), and none of the
   names that server-side template injection relies on (`self`, `config`, `request`, `lipsum`...);
2. Jinja's ImmutableSandboxedEnvironment at render time (it also catches names built at run
   time, e.g. through the `attr` filter or `str.format`), with every violation raised at once as
   a SecurityError instead of a lazy undefined value; the data a template sees cannot be mutated;
3. budgets (budget.py): loop iterations and calls per render (a step limit), its wall time, the
   size of integers, the printed size of every value a template builds (estimated *before* an
   operation that could amplify, such as `*`, `join`, `format` or `expandtabs`), and the text it
   outputs, macros and `set` blocks included. A template that loops or expands without limit
   stops with an error instead of hanging or exhausting memory.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .budget import (MAX_EXPONENT, MAX_INT_BITS, MAX_SECONDS, MAX_SIZE, MAX_STEPS, RenderBudgetError,  # noqa: F401
                     binop_size, bounded_sum, check_args, check_size, concat, emit, estimate_call, estimate_filter,
                     reset_budget, step)

# globals and names known from template-injection payloads; none is useful in a prompt
FORBIDDEN_NAMES = frozenset({
    "self", "lipsum", "cycler", "joiner", "config", "request", "session", "url_for",
    "get_flashed_messages", "__builtins__", "builtins", "globals",
    "locals", "vars", "eval", "exec", "open", "getattr", "setattr", "import", "__import__", "os", "sys",
    "subprocess",
})


def bounded_filter(name: str, func):
    passes = getattr(func, "jinja_pass_arg", None)  # Jinja passes the context/environment first to such filters

    def wrapper(*args, **kwargs):
        first, rest = (args[:1], args[1:]) if passes else ((), args)
        rest, kwargs = check_args(rest, kwargs, f"the `{name}` filter")
        estimate_filter(name, func, (*first, *rest), kwargs)
        return check_size(func(*first, *rest, **kwargs), f"the result of the `{name}` filter")

    if passes:
        wrapper.jinja_pass_arg = passes
    wrapper.__name__ = getattr(func, "__name__", name)
    return wrapper


class PromptSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, raising at the first unsafe access, with step, time and size budgets."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "-", "/", "//"})

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.globals["range"] = self._range
        self.filters["sum"] = jinja2.pass_environment(bounded_sum)
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
            step()
            yield item

    bounded_value = staticmethod(check_size)
    bounded_output = staticmethod(emit)
    bounded_concat = staticmethod(concat)

    @staticmethod
    def _range(*args):
        check_args(args, {}, "range")
        return range(*args)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        if __obj in _HELPERS:  # the budget's own checks, which _Bounds put into the template
            return __obj(*args)  # (Jinja adds _loop_vars/_block_vars keywords, which they do not take)
        step()
        name = getattr(__obj, "__name__", "") or "a call"
        args, kwargs = check_args(args, kwargs, f"`{name}`")
        estimate_call(__obj, args, kwargs)
        return check_size(super().call(__context, __obj, *args, **kwargs), f"the result of `{name}`")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        binop_size(operator, left, right)
        return check_size(super().call_binop(context, operator, left, right), f"the result of `{operator}`")


_HELPERS = frozenset({PromptSandbox.bounded_iter, check_size, emit, concat})


class _Bounds(NodeTransformer):
    """Wraps every loop's iterable in `bounded_iter`, every `~` in `bounded_concat`, every value a `set` assigns
    (namespace attributes included) in `bounded_value`, and every piece of output in `bounded_output`."""

    @staticmethod
    def _wrap(helper: str, args: list, lineno: int):
        return nodes.Call(nodes.EnvironmentAttribute(helper), args, [], None, None, lineno=lineno)

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = self._wrap("bounded_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return self._wrap("bounded_concat", list(node.nodes), node.lineno)

    def visit_Assign(self, node):
        node = self.generic_visit(node)
        node.node = self._wrap("bounded_value", [node.node], node.lineno)
        return node

    def visit_Output(self, node):
        node = self.generic_visit(node)
        node.nodes = [self._wrap("bounded_output", [child], child.lineno) for child in node.nodes]
        return node


def render_bounded(template, context: dict) -> str:
    """Render with fresh budgets, stopping as soon as the text passes MAX_SIZE characters."""
    reset_budget()
    parts, size = [], 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_SIZE:
            raise RenderBudgetError(f"the rendered text passed {MAX_SIZE:,} characters; templates must not expand without bound")
        parts.append(chunk)
    return "".join(parts)
