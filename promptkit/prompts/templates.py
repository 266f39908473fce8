"""Template families: loading YAML files, the sandboxed Jinja environment, rendering, and lint."""

from __future__ import annotations

import functools
import string
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

from ..errors import TemplateError, TemplateSecurityError
from ..paths import builtin_dir
from .safe_read import MAX_YAML_BYTES, AliasError, BoundedLoader, check_regular, read_regular
from .sandbox import PromptSandbox, bounded_filter, render_bounded

# What every template may use, whatever the task: the canonical Example fields plus the
# task's own instruction. The continuation template also sees the choice being scored.
CANONICAL_FIELDS = ("id", "input", "choices", "instruction", "meta")
CONTINUATION_FIELDS = ("choice", "index")
TEMPLATE_KEYS = {"name", "description", "prompt", "continuation", "header", "generation", "kinds", "axes", "metadata"}
KINDS = ("multiple_choice", "generation")
# Axes with these names are read by promptkit itself (see render.py), as well as by the templates:
# few-shot demonstrations and the chat template.
SELECTIONS = ("first_k", "random", "balanced")
ORDERS = ("as_selected", "reversed", "shuffled")
MAX_SHOTS = 64
RESERVED_AXES = {
    "shots": f"an integer from 0 to {MAX_SHOTS} (demonstrations before the example)",
    "demo_selection": f"one of {', '.join(SELECTIONS)}",
    "demo_order": f"one of {', '.join(ORDERS)}",
    "demo_separator": "a string (between demonstrations, and before the example)",
    "chat": "true or false (apply the model's chat template), or a system message (apply it with that message)",
    "system": "a string, empty or null for none (the chat's system message)",
    "demo_source": "none, real or synthetic (no demonstrations, held-apart examples, or ones a model wrote)",
    "noise": "none, or a noise spec such as typos:0.05, word_drop:0.1, word_swap:0.1, casing:0.1, whitespace:0.1, "
             "choices, prompt.typos:0.05 (see promptkit.noise)",
}
DEFAULT_STOP = ["\n"]
CASINGS = ("as_is", "upper", "lower", "title", "capitalize")
_ALLOWED = "Templates may use the example's fields, their axes and Jinja's filters, nothing else."


def _letter(index: int) -> str:
    """0 -> 'A', 1 -> 'B', ... 25 -> 'Z', then spreadsheet-style 26 -> 'AA', 27 -> 'AB', ... 52 -> 'BA', 702 -> 'AAA'
    (the usual multiple-choice labels, unique for any number of choices)."""
    n = int(index)
    if n < 0:
        raise TemplateError(f"letter filter: index {n} is negative; it labels choices 0, 1, 2, ... as A, B, C, ...")
    label = ""
    while True:
        n, r = divmod(n, 26)
        label = string.ascii_uppercase[r] + label
        if not n:
            return label
        n -= 1


def _casing(text: str, style: str) -> str:
    if style not in CASINGS:
        raise TemplateError(f"casing filter: unknown style {style!r}; use one of {', '.join(CASINGS)}")
    if style == "as_is":
        return text
    return getattr(str(text), style)()


@functools.cache
def make_environment() -> PromptSandbox:
    """The only environment templates are rendered in: sandboxed, bounded, strict about undefined names.
    Built once and shared (read-only after this; Jinja environments are safe to share)."""
    env = PromptSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["letter"] = bounded_filter("letter", _letter)
    env.filters["casing"] = bounded_filter("casing", _casing)
    return env


@dataclass(frozen=True)
class TemplateFamily:
    """One YAML file: a Jinja prompt, a Jinja continuation and the axes that vary them."""

    name: str
    prompt: str
    continuation: str
    axes: dict[str, list[Any]]
    description: str = ""
    header: str = ""  # rendered once per request, before any demonstrations
    kinds: tuple[str, ...] = KINDS  # the kinds of task the family can prompt
    generation: dict[str, Any] = field(default_factory=lambda: {"stop": list(DEFAULT_STOP)})
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str = "<memory>"
    lines: dict[str, int] = field(default_factory=dict, compare=False)
    _compiled: dict[str, jinja2.Template] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str) -> str:
        """'file:line' of a top-level key, for error messages."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else self.path

    def where_in(self, key: str, exc: BaseException) -> str:
        """'file:line' of the template line a render error happened on (Jinja maps its frames onto template
        lines), else of the key."""
        frames = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"]
        base = self.lines.get(key + "@jinja")
        return f"{self.path}:{base + frames[-1]}" if frames and base is not None else self.where(key)

    def template(self, key: str) -> jinja2.Template:
        if key not in self._compiled:
            source = getattr(self, key)
            try:
                self._compiled[key] = make_environment().from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(_jinja_message(self, key, exc)) from None
            except jinja2.exceptions.SecurityError as exc:
                raise TemplateSecurityError(
                    f"{self.where(key)}: template family '{self.name}' ({key}) was refused: {exc}. {_ALLOWED}"
                ) from None
            except (SyntaxError, RecursionError, MemoryError) as exc:  # Python's limits on the code Jinja generates
                raise TemplateError(too_deep(self, key, exc)) from None
        return self._compiled[key]

    def render(self, key: str, context: dict[str, Any]) -> str:
        """Render the `prompt` or `continuation` template; user mistakes become TemplateError."""
        template = self.template(key)
        try:
            return render_bounded(template, context)
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateSecurityError(
                f"{self.where_in(key, exc)}: template family '{self.name}' ({key}) was stopped by the sandbox: {exc}. {_ALLOWED}"
            ) from None
        except jinja2.UndefinedError as exc:
            allowed = sorted(context)
            raise TemplateError(
                f"{self.where_in(key, exc)}: template family '{self.name}' ({key}) uses an undefined "
                f"variable: {exc.message}. Available names: {', '.join(allowed)}. "
                "Declare it under `axes:` or use one of the canonical fields."
            ) from None
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateSecurityError(
                f"{self.where(key)}: template family '{self.name}' ({key}) recursed without end (a macro or a "
                "recursive loop that calls itself); give the recursion a stopping condition"
            ) from None
        except Exception as exc:  # a Jinja expression failed on the data (bad index, bad filter arg)
            raise TemplateError(
                f"{self.where_in(key, exc)}: template family '{self.name}' ({key}) failed to render: "
                f"{type(exc).__name__}: {exc}"
            ) from None


def too_deep(family: TemplateFamily, key: str, exc: BaseException) -> str:
    """A template nested past what Python can compile: over 20 nested blocks, or deeply nested expressions."""
    what = exc.msg if isinstance(exc, SyntaxError) else "it nests too deeply to compile"
    return (f"{family.where(key)}: template '{key}' of template family '{family.name}' cannot be compiled ({what}); "
            "nest fewer {% for %}/{% if %} blocks (at most 20) and fewer parentheses or operators, e.g. by "
            "splitting the logic into macros or `set` variables")


def _jinja_message(family: TemplateFamily, key: str, exc: jinja2.TemplateSyntaxError) -> str:
    base = family.lines.get(key + "@jinja")
    line = f"{family.path}:{base + exc.lineno}" if base is not None else f"{family.path} ({key} line {exc.lineno})"
    return f"{line}: Jinja syntax error in '{key}' of template family '{family.name}': {exc.message}"


def _node_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key; '<key>@jinja' holds the line before a template's first line."""
    try:
        root = yaml.compose(text, Loader=BoundedLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            key = str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            # a block scalar (| or >) starts on the line after its indicator
            block = isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">")
            lines[key + "@jinja"] = value_node.start_mark.line + (1 if block else 0)
    return lines


def read_yaml(path: Path) -> tuple[Any, str]:
    """Safe-load a YAML file (a regular file of at most MAX_YAML_BYTES, aliases bounded); errors name the file and line."""
    try:
        text = read_regular(path, MAX_YAML_BYTES, "YAML file", TemplateError).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=BoundedLoader), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "YAML refused" if isinstance(exc, AliasError) else "YAML syntax error"
        raise TemplateError(f"{where}: {kind}: {problem}") from None
    except RecursionError:
        raise TemplateError(f"{path}: YAML nested too deeply to read; flatten the file") from None


def family_from_dict(data: Any, path: str = "<memory>", lines: dict[str, int] | None = None) -> TemplateFamily:
    """Validate a parsed YAML mapping and build a TemplateFamily."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template family must be a YAML mapping with `name`, `prompt`, `continuation`, `axes`")
    missing = [k for k in ("name", "prompt") if k not in data]
    if missing:
        raise TemplateError(f"{path}: template family is missing required field(s): {', '.join(missing)}")
    unknown = set(data) - TEMPLATE_KEYS
    if unknown:
        raise TemplateError(
            f"{path}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(TEMPLATE_KEYS))}"
        )
    name = data["name"]
    if not isinstance(name, str) or not name.strip() or any(c in name for c in " ./\\"):
        raise TemplateError(f"{path}: `name` must be a non-empty string without spaces, dots or slashes (got {name!r})")
    for key in ("prompt", "continuation"):
        if key in data and not isinstance(data[key], str):
            raise TemplateError(f"{path}:{lines.get(key, '?')}: `{key}` must be a Jinja string")
    axes = data.get("axes") or {}
    if not isinstance(axes, dict):
        raise TemplateError(f"{path}: `axes` must map axis names to lists of values")
    clean_axes: dict[str, list[Any]] = {}
    for axis, values in axes.items():
        if not isinstance(axis, str) or not axis.isidentifier():
            raise TemplateError(f"{path}: axis name {axis!r} must be a valid identifier (letters, digits, _)")
        if axis in CANONICAL_FIELDS or axis in CONTINUATION_FIELDS:
            raise TemplateError(f"{path}: axis '{axis}' shadows a canonical field; rename the axis")
        if not isinstance(values, list) or not values:
            raise TemplateError(f"{path}: axis '{axis}' must be a non-empty list of values")
        for value in values:
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise TemplateError(f"{path}: axis '{axis}' has a non-scalar value {value!r}; use strings, numbers or booleans")
        if len({repr(v) for v in values}) != len(values):
            raise TemplateError(f"{path}: axis '{axis}' lists the same value twice; each value must be distinct")
        if axis in RESERVED_AXES:
            for value in values:
                if not _reserved_ok(axis, value):
                    raise TemplateError(f"{path}:{lines.get('axes', '?')}: axis '{axis}' has the value {value!r}; "
                                        f"promptkit reads this axis, and its values must be {RESERVED_AXES[axis]}")
        clean_axes[axis] = list(values)
    generation = data.get("generation") or {}
    if not isinstance(generation, dict) or set(generation) - {"stop", "max_new_tokens"}:
        raise TemplateError(f"{path}:{lines.get('generation', '?')}: `generation` must be a mapping with `stop:` "
                            "(a string or list of strings) and/or `max_new_tokens:` (an integer)")
    stop = generation.get("stop", DEFAULT_STOP)
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
        raise TemplateError(f"{path}:{lines.get('generation', '?')}: `generation.stop` must be a non-empty string or a "
                            f"list of them, or [] for none (got {generation.get('stop')!r})")
    n = generation.get("max_new_tokens")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096):
        raise TemplateError(f"{path}:{lines.get('generation', '?')}: `generation.max_new_tokens` must be an integer "
                            f"from 1 to 4096 (got {n!r})")
    kinds = data.get("kinds", list(KINDS))
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise TemplateError(f"{path}:{lines.get('kinds', '?')}: `kinds` must list multiple_choice and/or generation "
                            f"(got {data.get('kinds')!r})")
    for key in ("header",):
        if key in data and not isinstance(data[key], str):
            raise TemplateError(f"{path}:{lines.get(key, '?')}: `{key}` must be a Jinja string")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TemplateError(f"{path}:{lines.get('metadata', '?')}: `metadata` must be a mapping of names to values")
    family = TemplateFamily(
        name=name,
        prompt=data["prompt"],
        continuation=data.get("continuation", " {{ choice }}"),
        axes=clean_axes,
        description=str(data.get("description", "")),
        metadata=dict(metadata),
        path=path,
        lines=lines,
        header=data.get("header") or "",
        kinds=tuple(kinds),
        generation={"stop": stop, **({"max_new_tokens": n} if n is not None else {})},
    )
    family.template("prompt")  # compile now: syntax errors surface at load time
    family.template("continuation")
    family.template("header")
    return family


def _reserved_ok(axis: str, value: Any) -> bool:
    if axis == "shots":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SHOTS
    if axis == "demo_selection":
        return value in SELECTIONS
    if axis == "demo_order":
        return value in ORDERS
    if axis == "demo_separator":
        return isinstance(value, str)
    if axis == "chat":
        return isinstance(value, bool) or isinstance(value, str) and bool(value.strip())
    if axis == "noise":
        from .noise import parse

        try:
            parse(value)
        except ValueError:
            return False
        return True
    if axis == "demo_source":
        return value in ("none", "real", "synthetic")
    return value is None or isinstance(value, str)  # system


def load_family(path: str | Path) -> TemplateFamily:
    path = Path(path)
    data, text = read_yaml(path)
    return family_from_dict(data, str(path), _node_lines(text))


def builtin_sets() -> list[str]:
    """Names of the built-in template sets beyond the default one (sub-folders, e.g. 'chat')."""
    return sorted(p.name for p in builtin_dir("templates").iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def template_files(spec: str | Path | list | None) -> list[Path]:
    """Expand a templates argument (None = built-ins, a directory, a file, a built-in set's name such
    as 'chat', or a list of them) into YAML files."""
    if spec is None:
        spec = builtin_dir("templates")
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists() and str(item) in builtin_sets():
            path = builtin_dir("templates") / str(item)
        if path.is_dir():
            found = sorted(list(path.glob("*.yaml")) + list(path.glob("*.yml")))
            if not found:
                raise TemplateError(f"{path}: directory has no .yaml template files")
            files.extend(found)
        elif path.exists() or path.is_symlink():  # a regular file, else refused with what it is (a FIFO, a device...)
            check_regular(path, MAX_YAML_BYTES, "template file", TemplateError)
            files.append(path)
        else:
            raise TemplateError(f"{path}: no such template file or directory (built-in sets: {', '.join(builtin_sets())})")
    return files


def load_templates(spec: str | Path | list | None = None) -> list[TemplateFamily]:
    """Load template families from the built-in library, a directory, a file or a list of them."""
    families = [load_family(p) for p in template_files(spec)]
    seen: dict[str, str] = {}
    for family in families:
        if family.name in seen:
            raise TemplateError(
                f"{family.path}: template family name '{family.name}' is also used by {seen[family.name]}; names must be unique"
            )
        seen[family.name] = family.path
    return families


# ---------------------------------------------------------------------------- lint
